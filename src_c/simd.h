/*
 * The SIMD paths every kernel file is instantiated for, and how their names are
 * formed. A file defines MC_ISA (baseline, avx2 or avx512) and includes its
 * per-type instantiation header; functions get MC_TARGET and names from MC_NAME.
 */
#ifndef MOMCORE_SIMD_H
#define MOMCORE_SIMD_H

/* MC_PORTABLE_ONLY: the portable baseline alone, as on a machine without x86 (a check
 * that it builds without intrinsics). */
#if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__) && !defined(MC_PORTABLE_ONLY)
#define MC_X86 1
#else
#define MC_X86 0
#endif

#define MC_TARGET_baseline
/* F16C (the float16 conversions) came with or before AVX2 on every x86 CPU. */
#define MC_TARGET_avx2 __attribute__((target("avx2,fma,f16c")))
#if defined(__clang__)
#define MC_TARGET_avx512 __attribute__((target("avx512f")))
#else
/* 512-bit vectors: without prefer-vector-width GCC would stay at 256 bits. */
#define MC_TARGET_avx512 __attribute__((target("avx512f,prefer-vector-width=512")))
#endif

#define MC_TARGET_OF_(isa) MC_TARGET_##isa
#define MC_TARGET_OF(isa) MC_TARGET_OF_(isa)
#define MC_CAT3_(a, b, c) a##_##b##_##c
#define MC_CAT3(a, b, c) MC_CAT3_(a, b, c)

#endif
