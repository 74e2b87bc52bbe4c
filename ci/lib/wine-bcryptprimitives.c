/* ci/lib/wine-bcryptprimitives.c: a stand-in bcryptprimitives.dll for Debian's wine 8, which
 * lacks it. Rust's std (since 1.78) imports ProcessPrng from it for random numbers, so without
 * it no Rust Windows binary starts under that wine ("bcryptprimitives.dll not found",
 * exit 53; wine 9 ships it). ci/cross-check --wine builds it with mingw-w64 into the test's
 * wine prefix only; Windows itself has the real one. ProcessPrng = RtlGenRandom in a loop. */
#include <windows.h>
#include <ntsecapi.h>
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len) {
        ULONG n = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (!RtlGenRandom(data, n)) return FALSE;
        data += n;
        len -= n;
    }
    return TRUE;
}
