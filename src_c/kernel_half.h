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

/* dst[0:m] := the float32 values of the bfloat16 src[0:m] (exact) */
MC_TARGET static inline void
MC_CAT3(widen, bf16, MC_ISA)(float *restrict dst, const uint16_t *restrict src, size_t m)
{
    size_t i;
    for (i = 0; i < m; i++)
        dst[i] = mc_float_of_bits((uint32_t)src[i] << 16);
}

/* dst[0:m] := src[0:m] rounded to bfloat16 (see mc_f32_to_bf16) */
MC_TARGET static inline void
MC_CAT3(narrow, bf16, MC_ISA)(uint16_t *restrict dst, const float *restrict src, size_t m)
{
    size_t i;
    for (i = 0; i < m; i++)
        dst[i] = mc_f32_to_bf16(src[i]);
}

/* float16: the conversion instructions where the path has them (F16C with AVX2,
 * their 512-bit forms with AVX-512F), with imm 0 = round to nearest even, and the
 * portable conversion, which stores the same bits, for the baseline and the tails. */
#define MC_F16_LANES_baseline 1
#define MC_F16_LANES_avx2 8
#define MC_F16_LANES_avx512 16
#define MC_F16_LANES_OF_(isa) MC_F16_LANES_##isa
#define MC_F16_LANES_OF(isa) MC_F16_LANES_OF_(isa)

MC_TARGET static inline void
MC_CAT3(widen, f16, MC_ISA)(float *restrict dst, const uint16_t *restrict src, size_t m)
{
    size_t i = 0;
#if MC_F16_LANES_OF(MC_ISA) == 16
    for (; i + 16 <= m; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + i))));
#elif MC_F16_LANES_OF(MC_ISA) == 8
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
#if MC_F16_LANES_OF(MC_ISA) == 16
    for (; i + 16 <= m; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
#elif MC_F16_LANES_OF(MC_ISA) == 8
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
