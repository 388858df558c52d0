/*
 * The step on 16-bit storage (bfloat16, float16) for the SIMD path MC_ISA: included
 * by kernel_types.h after the float instantiation, whose rule loop it reuses.
 *
 * Each block of MC_HALF_BLOCK elements is widened to float32 in buffers on the
 * stack (exact), stepped by the float32 rule loop (the same operations in the same
 * order as a float32 step), and each new w and state value is rounded once, to
 * nearest even, as it is stored. So a half step equals the float32 step of the
 * widened arrays followed by one rounding, on every path (the numpy reference does
 * exactly that). The buffers stay in L1; memory sees 2 bytes per element and stream.
 */
#define MC_HALF_BLOCK 512

#define MC_RULE_LOOP_F32 MC_CAT3(rule_loop, f32, MC_ISA)

#define MC_LANES_baseline 1
#define MC_LANES_avx2 8
#define MC_LANES_avx512 16
#define MC_LANES_OF_(isa) MC_LANES_##isa
#define MC_LANES_OF(isa) MC_LANES_OF_(isa)

/* dst[0:m] := the float32 values of the bfloat16 src[0:m] (exact). GCC vectorises
 * the plain loop at half the path's width, with shuffles; hence the intrinsics. */
MC_TARGET static inline void
MC_CAT3(widen, bf16, MC_ISA)(float *restrict dst, const uint16_t *restrict src, size_t m)
{
    size_t i = 0;
#if MC_LANES_OF(MC_ISA) == 16
    for (; i + 16 <= m; i += 16)
        _mm512_storeu_si512((void *)(dst + i),
                            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_loadu_si256(
                                                  (const __m256i *)(src + i))), 16));
#elif MC_LANES_OF(MC_ISA) == 8
    for (; i + 8 <= m; i += 8)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128(
                                                  (const __m128i *)(src + i))), 16));
#endif
    for (; i < m; i++)
        dst[i] = mc_bf16_to_f32(src[i]);
}

/* dst[0:m] := src[0:m] rounded to bfloat16 (see mc_f32_to_bf16); the compiler's
 * vectorisation of it blends and packs slowly, hence the intrinsics: the same
 * integer operations, lane by lane. */
MC_TARGET static inline void
MC_CAT3(narrow, bf16, MC_ISA)(uint16_t *restrict dst, const float *restrict src, size_t m)
{
    size_t i = 0;
#if MC_LANES_OF(MC_ISA) == 16
    const __m512i one = _mm512_set1_epi32(1), bias = _mm512_set1_epi32(0x7fff);
    const __m512i magnitude = _mm512_set1_epi32(0x7fffffff);
    const __m512i inf = _mm512_set1_epi32(0x7f800000);
    const __m512i sign = _mm512_set1_epi32(0x8000), quiet = _mm512_set1_epi32(0x7fc0);
    for (; i + 16 <= m; i += 16) {
        const __m512i x = _mm512_loadu_si512((const void *)(src + i));
        const __m512i upper = _mm512_srli_epi32(x, 16);
        const __m512i rounded = _mm512_srli_epi32(
            _mm512_add_epi32(x, _mm512_add_epi32(bias, _mm512_and_si512(upper, one))), 16);
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(x, magnitude), inf);
        const __m512i nan_bits = _mm512_or_si512(_mm512_and_si512(upper, sign), quiet);
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(rounded, nan, nan_bits)));
    }
#elif MC_LANES_OF(MC_ISA) == 8
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff);
    const __m256i magnitude = _mm256_set1_epi32(0x7fffffff);
    const __m256i inf = _mm256_set1_epi32(0x7f800000);
    const __m256i sign = _mm256_set1_epi32(0x8000), quiet = _mm256_set1_epi32(0x7fc0);
    for (; i + 8 <= m; i += 8) {
        const __m256i x = _mm256_loadu_si256((const __m256i *)(src + i));
        const __m256i upper = _mm256_srli_epi32(x, 16);
        const __m256i rounded = _mm256_srli_epi32(
            _mm256_add_epi32(x, _mm256_add_epi32(bias, _mm256_and_si256(upper, one))), 16);
        /* signed compare: both sides are below 2**31 */
        const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, magnitude), inf);
        const __m256i nan_bits = _mm256_or_si256(_mm256_and_si256(upper, sign), quiet);
        const __m256i lanes = _mm256_blendv_epi8(rounded, nan_bits, nan);
        /* 32 -> 16 bits: packus works within 128-bit halves; gather quadwords 0, 2 */
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(lanes, lanes), 0x08);
        _mm_storeu_si128((__m128i *)(dst + i), _mm256_castsi256_si128(packed));
    }
#endif
    for (; i < m; i++)
        dst[i] = mc_f32_to_bf16(src[i]);
}

/* float16: the conversion instructions where the path has them (F16C with AVX2,
 * their 512-bit forms with AVX-512F), with imm 0 = round to nearest even, and the
 * portable conversion, which stores the same bits, for the baseline and the tails. */

MC_TARGET static inline void
MC_CAT3(widen, f16, MC_ISA)(float *restrict dst, const uint16_t *restrict src, size_t m)
{
    size_t i = 0;
#if MC_LANES_OF(MC_ISA) == 16
    for (; i + 16 <= m; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
#elif MC_LANES_OF(MC_ISA) == 8
    for (; i + 8 <= m; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
#endif
    for (; i < m; i++)
        dst[i] = mc_f16_to_f32(src[i]);
}

MC_TARGET static inline void
MC_CAT3(narrow, f16, MC_ISA)(uint16_t *restrict dst, const float *restrict src, size_t m)
{
    size_t i = 0;
#if MC_LANES_OF(MC_ISA) == 16
    for (; i + 16 <= m; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#elif MC_LANES_OF(MC_ISA) == 8
    for (; i + 8 <= m; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#endif
    for (; i < m; i++)
        dst[i] = mc_f32_to_f16(src[i]);
}

/* The step and its dry run for one 16-bit format: MC_H is its name (bf16 or f16),
 * MC_H_EXPMASK its exponent bits (all set for NaN and +-inf). */
#define MC_H bf16
#define MC_H_EXPMASK 0x7f80
#include "kernel_half_step.h"
#undef MC_H
#undef MC_H_EXPMASK

#define MC_H f16
#define MC_H_EXPMASK 0x7c00
#include "kernel_half_step.h"
#undef MC_H
#undef MC_H_EXPMASK

#undef MC_RULE_LOOP_F32
