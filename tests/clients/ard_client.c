/* A tiny viewer on libvncclient (Debian libvncserver-dev) that insists on
 * Apple's Diffie-Hellman authentication (security type 30, "ARD"): an
 * implementation of type 30 nobody here wrote (libvncclient's
 * HandleARDAuth), to cross-check ticketvnc's server side and the client in
 * tests/apple_dh.rs. tests/apple_dh.rs builds and runs it.
 *
 *   ard_client HOST PORT USER PASSWORD OUT.rgb
 *
 * On success it writes the first complete framebuffer as width*height RGB
 * triples to OUT.rgb, prints "ok WIDTHxHEIGHT" and exits 0; a failed
 * connection or authentication exits 2, anything else 1. */
#include <rfb/rfbclient.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *user, *pass;
static long covered;

static rfbCredential *credential(rfbClient *cl, int type)
{
    (void)cl;
    if (type != rfbCredentialTypeUser)
        return NULL;
    rfbCredential *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->userCredential.username = strdup(user);
    c->userCredential.password = strdup(pass);
    return c;
}

static void got_update(rfbClient *cl, int x, int y, int w, int h)
{
    (void)cl; (void)x; (void)y;
    covered += (long)w * h;
}

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: %s HOST PORT USER PASSWORD OUT.rgb\n", argv[0]);
        return 1;
    }
    user = argv[3];
    pass = argv[4];
    /* 8 bits a sample, 3 samples, 4 bytes a pixel: R, G, B, pad in memory. */
    rfbClient *cl = rfbGetClient(8, 3, 4);
    if (!cl)
        return 1;
    cl->serverHost = strdup(argv[1]);
    cl->serverPort = atoi(argv[2]);
    cl->GetCredential = credential;
    cl->GotFrameBufferUpdate = got_update;
    cl->appData.encodingsString = "raw";
    cl->appData.shareDesktop = TRUE;
    static const uint32_t only_ard[] = {rfbARD, 0};
    SetClientAuthSchemes(cl, only_ard, -1);
    if (!rfbInitClient(cl, NULL, NULL)) /* frees cl on failure */
        return 2;
    long want = (long)cl->width * cl->height;
    for (int i = 0; i < 600 && covered < want; i++) {
        int n = WaitForMessage(cl, 100000);
        if (n < 0 || (n > 0 && !HandleRFBServerMessage(cl))) {
            rfbClientCleanup(cl);
            return 1;
        }
    }
    if (covered < want) {
        fprintf(stderr, "no complete framebuffer\n");
        rfbClientCleanup(cl);
        return 1;
    }
    FILE *f = fopen(argv[5], "wb");
    if (!f)
        return 1;
    for (long p = 0; p < want; p++)
        fwrite(cl->frameBuffer + 4 * p, 1, 3, f);
    fclose(f);
    printf("ok %dx%d\n", cl->width, cl->height);
    rfbClientCleanup(cl);
    return 0;
}
