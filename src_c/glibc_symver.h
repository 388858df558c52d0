/*
 * Old glibc symbol versions for the libm and libdl functions whose current version is
 * newer than the oldest glibc momcore's wheels run on (2.28: manylinux_2_28).
 *
 * A program linked against glibc records, for every function, the version that was the
 * default when it was linked, and it then needs a glibc that has that version. glibc
 * 2.29 gave exp, exp2, log, log2 and pow new versions (GLIBC_2.29: the same results,
 * without the System V error-handling wrapper), and 2.34 moved dlopen and dlsym into
 * libc (GLIBC_2.34). Built on a newer glibc, momcore would therefore refuse to load on
 * an older one although it uses nothing those versions added. The .symver directives
 * below bind these functions to the versions every glibc of the platform has (the
 * first one of x86-64 and of AArch64); a newer glibc keeps them as compatibility
 * symbols. Everything else momcore calls has versions up to 2.27 (expf and logf: their
 * 2.27 versions are the faster ones, and numpy's own wheels need glibc 2.27 too).
 *
 * Include this header in each C file that calls one of these functions (the directive
 * applies to the file it is in). Elsewhere than glibc on x86-64 or AArch64 it does
 * nothing. MC_NO_SYMVER turns it off.
 */
#ifndef MOMCORE_GLIBC_SYMVER_H
#define MOMCORE_GLIBC_SYMVER_H

#include <stdlib.h> /* a C library header: defines __GLIBC__ under glibc */

#if defined(__GLIBC__) && defined(__GNUC__) && !defined(MC_NO_SYMVER)
#if defined(__x86_64__)
#define MC_GLIBC_FIRST "GLIBC_2.2.5"
#elif defined(__aarch64__)
#define MC_GLIBC_FIRST "GLIBC_2.17"
#endif
#endif

#ifdef MC_GLIBC_FIRST
#define MC_SYMVER_(f) __asm__(".symver " #f "," #f "@" MC_GLIBC_FIRST)
MC_SYMVER_(exp);
MC_SYMVER_(exp2);
MC_SYMVER_(log);
MC_SYMVER_(log2);
MC_SYMVER_(pow);
MC_SYMVER_(dlopen);
MC_SYMVER_(dlsym);
#undef MC_SYMVER_
#endif

#endif
