/* ProcessPrng for Wine versions that lack it (Debian 12's Wine 8.0 has no
 * bcryptprimitives.dll at all). Rust's std (since 1.78) imports ProcessPrng
 * from bcryptprimitives.dll for its random numbers (HashMap keys), so a
 * Windows build of ticketvnc does not even start there without it.
 *
 * The tests build this with MinGW as bcryptprimitives.dll and put it next
 * to ticketvnc.exe; it forwards to advapi32's RtlGenRandom
 * (SystemFunction036), which Wine has always had. Test scaffolding only:
 * real Windows (8 and later) has ProcessPrng, and nothing here is shipped.
 *
 *   x86_64-w64-mingw32-gcc -shared -O2 -o bcryptprimitives.dll \
 *       processprng.c -ladvapi32
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG n = length > 0x10000000 ? 0x10000000 : (ULONG)length;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}
