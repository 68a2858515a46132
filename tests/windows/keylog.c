/* A Windows window that writes down the input it receives, for
 * tests/windows_wine.rs: the keys and clicks ticketvnc.exe injects with
 * SendInput must arrive in a real window's message queue.
 *
 *   keylog.exe LOGFILE X Y WIDTH HEIGHT
 *
 * Opens a borderless window at X,Y of WIDTH x HEIGHT filled with
 * RGB(0x33,0x66,0x99), brings it to the foreground and appends one line per
 * message to LOGFILE:
 *   ready
 *   char XXXX          WM_CHAR, a UTF-16 code unit in hex
 *   down VV / up VV    WM_KEYDOWN/WM_SYSKEYDOWN, WM_KEYUP/WM_SYSKEYUP, the VK in hex
 *   button B down X Y  (B: left, middle, right; client coordinates)
 *   button B up X Y
 *   wheel D            WM_MOUSEWHEEL, D = delta (120 per notch, + away from the user)
 * Closes on WM_CLOSE.
 *
 *   x86_64-w64-mingw32-gcc -O2 -mwindows -o keylog.exe keylog.c
 */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>

static FILE *out;

static void note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfprintf(out, fmt, ap);
    va_end(ap);
    fputc('\n', out);
    fflush(out);
}

static void button(const char *b, const char *dir, LPARAM lp)
{
    note("button %s %s %d %d", b, dir, (int)(short)LOWORD(lp), (int)(short)HIWORD(lp));
}

static LRESULT CALLBACK proc(HWND w, UINT m, WPARAM wp, LPARAM lp)
{
    switch (m) {
    case WM_CHAR: note("char %04x", (unsigned)wp); return 0;
    case WM_KEYDOWN: case WM_SYSKEYDOWN: note("down %02x", (unsigned)wp); break;
    case WM_KEYUP: case WM_SYSKEYUP: note("up %02x", (unsigned)wp); break;
    case WM_LBUTTONDOWN: button("left", "down", lp); return 0;
    case WM_LBUTTONUP: button("left", "up", lp); return 0;
    case WM_MBUTTONDOWN: button("middle", "down", lp); return 0;
    case WM_MBUTTONUP: button("middle", "up", lp); return 0;
    case WM_RBUTTONDOWN: button("right", "down", lp); return 0;
    case WM_RBUTTONUP: button("right", "up", lp); return 0;
    case WM_MOUSEWHEEL: note("wheel %d", (int)(short)HIWORD(wp)); return 0;
    case WM_DESTROY: PostQuitMessage(0); return 0;
    }
    return DefWindowProcW(w, m, wp, lp);
}

int WINAPI WinMain(HINSTANCE inst, HINSTANCE prev, LPSTR cmd, int show)
{
    int argc;
    LPWSTR *argv = CommandLineToArgvW(GetCommandLineW(), &argc);
    if (!argv || argc != 6)
        return 2;
    out = _wfopen(argv[1], L"a");
    if (!out)
        return 3;
    WNDCLASSW wc = {0};
    wc.lpfnWndProc = proc;
    wc.hInstance = inst;
    wc.hCursor = LoadCursor(NULL, IDC_ARROW);
    wc.hbrBackground = CreateSolidBrush(RGB(0x33, 0x66, 0x99));
    wc.lpszClassName = L"ticketvnc-keylog";
    RegisterClassW(&wc);
    HWND w = CreateWindowExW(0, wc.lpszClassName, L"ticketvnc-keylog",
                             WS_POPUP | WS_VISIBLE, _wtoi(argv[2]), _wtoi(argv[3]),
                             _wtoi(argv[4]), _wtoi(argv[5]), NULL, NULL, inst, NULL);
    if (!w)
        return 4;
    SetForegroundWindow(w);
    SetFocus(w);
    UpdateWindow(w);
    note("ready");
    MSG msg;
    while (GetMessageW(&msg, NULL, 0, 0) > 0) {
        TranslateMessage(&msg);
        DispatchMessageW(&msg);
    }
    return 0;
}
