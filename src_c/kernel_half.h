/*
 * The step on 16-bit storage (bfloat16, float16) for the SIMD path MC_ISA: included
 * by kernel_types.h after the float instantiation, whose rule loop it reuses.
 *
 * Elements are widened to float32 (exact), stepped by the float32 rule loop (the
 * same operations in the same order as a float32 step), and each new w and state
 * value is rounded once, to nearest even, as it is stored. So a half step equals the
 * float32 step of the widened arrays followed by one rounding, on every path (the
 * numpy reference does exactly that). The SIMD paths do it a chunk at a time in
 * registers (see kernel_half_step.h): one pass, 2 bytes per element and stream; the
 * portable baseline a block at a time through buffers on the stack, which stay in L1.
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

#if MC_LANES_OF(MC_ISA) == 16
/* The float32 lanes x rounded to bfloat16 (see mc_f32_to_bf16), in the upper 16 bits
 * of each lane (the lower 16 are left over from the rounding): adding 0x7fff plus the
 * lowest kept bit. Right for every lane but NaNs (see round_upper). */
MC_TARGET static inline __attribute__((always_inline)) __m512i
MC_CAT3(round_number, bf16, MC_ISA)(const __m512i x)
{
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(x, 16), _mm512_set1_epi32(1));
    return _mm512_add_epi32(x, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb));
}

/* round_number with the NaN lanes (rare: a branch) made the quiet NaN with their sign;
 * the NaNs found as integers (no floating-point exception, whatever the input). */
MC_TARGET static inline __attribute__((always_inline)) __m512i
MC_CAT3(round_upper, bf16, MC_ISA)(const __m512i x)
{
    const __m512i rounded = MC_CAT3(round_number, bf16, MC_ISA)(x);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(x, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    if (__builtin_expect(nan != 0, 0)) /* (x & sign) | quiet NaN, as a bitwise select */
        return _mm512_mask_mov_epi32(
            rounded, nan,
            _mm512_ternarylogic_epi32(x, _mm512_set1_epi32((int)0x80000000u),
                                      _mm512_set1_epi32(0x7fc00000), 0xea /* A&B | C */));
    return rounded;
}
#elif MC_LANES_OF(MC_ISA) == 8
MC_TARGET static inline __attribute__((always_inline)) __m256i
MC_CAT3(round_number, bf16, MC_ISA)(const __m256i x)
{
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(x, 16), _mm256_set1_epi32(1));
    return _mm256_add_epi32(x, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
}

MC_TARGET static inline __attribute__((always_inline)) __m256i
MC_CAT3(round_upper, bf16, MC_ISA)(const __m256i x)
{
    const __m256i rounded = MC_CAT3(round_number, bf16, MC_ISA)(x);
    /* signed compare: both sides are below 2**31 */
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(x, _mm256_set1_epi32(0x7fffffff)),
                                           _mm256_set1_epi32(0x7f800000));
    if (__builtin_expect(!_mm256_testz_si256(nan, nan), 0))
        return _mm256_blendv_epi8(
            rounded,
            _mm256_or_si256(_mm256_and_si256(x, _mm256_set1_epi32((int)0x80000000u)),
                            _mm256_set1_epi32(0x7fc00000)),
            nan);
    return rounded;
}
#endif

/* dst[0:m] := src[0:m] rounded to bfloat16 (see mc_f32_to_bf16); the compiler's
 * vectorisation of it blends and packs slowly, hence the intrinsics: the same
 * integer operations, lane by lane. */
MC_TARGET static inline void
MC_CAT3(narrow, bf16, MC_ISA)(uint16_t *restrict dst, const float *restrict src, size_t m)
{
    size_t i = 0;
#if MC_LANES_OF(MC_ISA) == 16
    for (; i + 16 <= m; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i),
                            _mm512_cvtepi32_epi16(_mm512_srli_epi32(
                                MC_CAT3(round_upper, bf16, MC_ISA)(
                                    _mm512_loadu_si512((const void *)(src + i))), 16)));
#elif MC_LANES_OF(MC_ISA) == 8
    for (; i + 8 <= m; i += 8) {
        const __m256i lanes = _mm256_srli_epi32(MC_CAT3(round_upper, bf16, MC_ISA)(
                                                    _mm256_loadu_si256((const __m256i *)(src + i))), 16);
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

/* ---- chunks: the unit of the step ----------------------------------------------
 *
 * The step moves MC_HALF_CHUNK elements of each stream at a time through float32
 * (in registers, once the compiler has inlined the chunk): load_chunk widens them in
 * an order of the path's choosing, store_chunk rounds them and stores them back from
 * that order. The rule is elementwise, so any order serves that every stream shares.
 * bfloat16 on the SIMD paths: a 32-bit lane of the loaded vector holds an even
 * element in its lower half and the following odd one in its upper half. The lane
 * with its lower half cleared is the odd element as float32, the lane shifted up by
 * 16 the even one: the chunk is held as its even elements, then its odd ones, and
 * both directions take one operation per vector, without shuffles. float16 keeps the
 * order (its conversion instructions widen and narrow lanes in place). */
#define MC_HALF_CHUNK_baseline 2 /* unused: the baseline steps in blocks */
#define MC_HALF_CHUNK_avx2 16
#define MC_HALF_CHUNK_avx512 32
#define MC_HALF_CHUNK_OF_(isa) MC_HALF_CHUNK_##isa
#define MC_HALF_CHUNK_OF(isa) MC_HALF_CHUNK_OF_(isa)
#define MC_HALF_CHUNK MC_HALF_CHUNK_OF(MC_ISA)

/* dst[0:MC_HALF_CHUNK] := the float32 values of src[0:MC_HALF_CHUNK], in the path's
 * order (exact). */
MC_TARGET static inline __attribute__((always_inline)) void
MC_CAT3(load_chunk, bf16, MC_ISA)(float *restrict dst, const uint16_t *restrict src)
{
#if MC_LANES_OF(MC_ISA) == 16
    const __m512i x = _mm512_loadu_si512((const void *)src);
    _mm512_store_ps(dst, _mm512_castsi512_ps(_mm512_slli_epi32(x, 16)));
    _mm512_store_ps(dst + 16, _mm512_castsi512_ps(
                                  _mm512_and_si512(x, _mm512_set1_epi32((int)0xffff0000u))));
#elif MC_LANES_OF(MC_ISA) == 8
    const __m256i x = _mm256_loadu_si256((const __m256i *)src);
    _mm256_store_ps(dst, _mm256_castsi256_ps(_mm256_slli_epi32(x, 16)));
    _mm256_store_ps(dst + 8, _mm256_castsi256_ps(
                                 _mm256_and_si256(x, _mm256_set1_epi32((int)0xffff0000u))));
#else
    MC_CAT3(widen, bf16, MC_ISA)(dst, src, MC_HALF_CHUNK);
#endif
}

/* dst[0:MC_HALF_CHUNK] := src (in the order load_chunk gave) rounded to bfloat16.
 * src holds results of arithmetic, never signalling NaNs: one quiet compare of the
 * two vectors finds whether a NaN needs round_upper (which raises no flag either). */
MC_TARGET static inline __attribute__((always_inline)) void
MC_CAT3(store_chunk, bf16, MC_ISA)(uint16_t *restrict dst, const float *restrict src)
{
#if MC_LANES_OF(MC_ISA) == 16
    const __m512 a = _mm512_load_ps(src), b = _mm512_load_ps(src + 16);
    __m512i even = MC_CAT3(round_number, bf16, MC_ISA)(_mm512_castps_si512(a));
    __m512i odd = MC_CAT3(round_number, bf16, MC_ISA)(_mm512_castps_si512(b));
    if (__builtin_expect(_mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q) != 0, 0)) {
        even = MC_CAT3(round_upper, bf16, MC_ISA)(_mm512_castps_si512(a));
        odd = MC_CAT3(round_upper, bf16, MC_ISA)(_mm512_castps_si512(b));
    }
    _mm512_storeu_si512((void *)dst,
                        _mm512_ternarylogic_epi32(_mm512_srli_epi32(even, 16), odd,
                                                  _mm512_set1_epi32((int)0xffff0000u),
                                                  0xf8 /* A | B&C */));
#elif MC_LANES_OF(MC_ISA) == 8
    const __m256 a = _mm256_load_ps(src), b = _mm256_load_ps(src + 8);
    __m256i even = MC_CAT3(round_number, bf16, MC_ISA)(_mm256_castps_si256(a));
    __m256i odd = MC_CAT3(round_number, bf16, MC_ISA)(_mm256_castps_si256(b));
    if (__builtin_expect(_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_UNORD_Q)) != 0, 0)) {
        even = MC_CAT3(round_upper, bf16, MC_ISA)(_mm256_castps_si256(a));
        odd = MC_CAT3(round_upper, bf16, MC_ISA)(_mm256_castps_si256(b));
    }
    _mm256_storeu_si256((__m256i *)dst,
                        _mm256_or_si256(_mm256_srli_epi32(even, 16),
                                        _mm256_and_si256(odd, _mm256_set1_epi32((int)0xffff0000u))));
#else
    MC_CAT3(narrow, bf16, MC_ISA)(dst, src, MC_HALF_CHUNK);
#endif
}

/* float16 chunks: the conversion instructions, in order, the two halves of a chunk
 * stored as one vector (so that a load of the whole chunk can take it from the store
 * buffer). */
MC_TARGET static inline __attribute__((always_inline)) void
MC_CAT3(load_chunk, f16, MC_ISA)(float *restrict dst, const uint16_t *restrict src)
{
#if MC_LANES_OF(MC_ISA) == 16
    _mm512_store_ps(dst, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)src)));
    _mm512_store_ps(dst + 16, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(src + 16))));
#elif MC_LANES_OF(MC_ISA) == 8
    _mm256_store_ps(dst, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)src)));
    _mm256_store_ps(dst + 8, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + 8))));
#else
    MC_CAT3(widen, f16, MC_ISA)(dst, src, MC_HALF_CHUNK);
#endif
}

MC_TARGET static inline __attribute__((always_inline)) void
MC_CAT3(store_chunk, f16, MC_ISA)(uint16_t *restrict dst, const float *restrict src)
{
#if MC_LANES_OF(MC_ISA) == 16
    const __m256i lo = _mm512_cvtps_ph(_mm512_load_ps(src), _MM_FROUND_TO_NEAREST_INT);
    const __m256i hi = _mm512_cvtps_ph(_mm512_load_ps(src + 16), _MM_FROUND_TO_NEAREST_INT);
    _mm512_storeu_si512((void *)dst, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
#elif MC_LANES_OF(MC_ISA) == 8
    const __m128i lo = _mm256_cvtps_ph(_mm256_load_ps(src), _MM_FROUND_TO_NEAREST_INT);
    const __m128i hi = _mm256_cvtps_ph(_mm256_load_ps(src + 8), _MM_FROUND_TO_NEAREST_INT);
    _mm256_storeu_si256((__m256i *)dst, _mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
#else
    MC_CAT3(narrow, f16, MC_ISA)(dst, src, MC_HALF_CHUNK);
#endif
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
#undef MC_HALF_CHUNK
