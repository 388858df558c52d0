/*
 * exp and tanh for the activation loops of the MLP passes: vectorised where glibc's
 * vector math library (libmvec) is there at run time, scalar libm otherwise.
 *
 * mc_exp, mc_expf, mc_tanh and mc_tanhf return what the libm functions of the same
 * name return. On x86-64 with glibc they are declared SIMD-enabled, so that the
 * vectoriser calls their vector variants (x86-64 vector function ABI names such as
 * _ZGVdN4v_mc_exp: 4 doubles in a 256-bit register) from the loops it vectorises.
 * vmath.c defines those variants: each one jumps to libmvec's variant of the libm
 * function (_ZGVdN4v_exp, ...: within 4 ulp of the exact result), looked up once when
 * the extension is loaded, or, where the running glibc has none, applies the scalar
 * libm function to each lane. libmvec has exp since glibc 2.22 and tanh since 2.35;
 * linking it (-lmvec) would make momcore need the build machine's glibc, looking it up
 * lets one build run on older ones and still use it where it is.
 *
 * Elsewhere (other CPUs, other C libraries, other compilers) the functions are plain
 * scalar calls of libm. Plain C99 apart from the pragma, which compilers without
 * OpenMP SIMD support ignore.
 */
#ifndef MOMCORE_VMATH_H
#define MOMCORE_VMATH_H

#include <math.h>

#if defined(__x86_64__) && defined(__GNUC__) && defined(__GLIBC__) && !defined(MC_NO_VMATH)
#define MC_VMATH 1
#else
#define MC_VMATH 0
#endif

/* vmath.c defines MC_VMATH_DEFINE: it writes the vector variants itself and must not
 * have the compiler make its own from the scalar definitions. */
#if MC_VMATH && !defined(MC_VMATH_DEFINE)
#define MC_VMATH_SIMD _Pragma("omp declare simd notinbranch")
#else
#define MC_VMATH_SIMD
#endif
/* Local to the extension (called directly, not through its symbol table); const: the
 * result depends on the argument alone (the build has -fno-math-errno: errno is not
 * part of the result), which the vectoriser needs to call the vector variants. */
#if defined(__GNUC__)
#define MC_VMATH_LOCAL __attribute__((visibility("hidden")))
#define MC_VMATH_CONST __attribute__((const))
#else
#define MC_VMATH_LOCAL
#define MC_VMATH_CONST
#endif

MC_VMATH_SIMD MC_VMATH_LOCAL MC_VMATH_CONST double mc_exp(double x);
MC_VMATH_SIMD MC_VMATH_LOCAL MC_VMATH_CONST float mc_expf(float x);
MC_VMATH_SIMD MC_VMATH_LOCAL MC_VMATH_CONST double mc_tanh(double x);
MC_VMATH_SIMD MC_VMATH_LOCAL MC_VMATH_CONST float mc_tanhf(float x);

/* Which implementation the vector variants of a function use. */
typedef enum { MC_VMATH_EXP, MC_VMATH_TANH } mc_vmath_function;

/* "libmvec" or "libm" (scalar per lane, also where nothing is vectorised), for
 * MC_VMATH_EXP and MC_VMATH_TANH; NULL for any other value. */
const char *mc_vmath_source(int function);

#endif
