/*
 * Portable conversions between float32 and the two 16-bit storage formats, as bit
 * patterns (uint16_t): bfloat16 (1 sign, 8 exponent, 7 mantissa bits: float32's
 * upper half) and IEEE binary16 float16 (1, 5, 10).
 *
 * float32 -> half rounds to nearest, ties to even, with overflow to +-inf and
 * gradual underflow (float16 subnormals); NaN stays NaN. These are the roundings of
 * ml_dtypes' and numpy's astype, and of the x86 conversion instructions (F16C
 * vcvtps2ph with imm 0): every path of the kernel stores the same bits.
 */
#ifndef MOMCORE_HALF_H
#define MOMCORE_HALF_H

#include <stdint.h>
#include <string.h>

static inline float mc_float_of_bits(uint32_t bits)
{
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static inline uint32_t mc_bits_of_float(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

/* c ? a : b for c in {0, 1}, as arithmetic: GCC turns ternaries here into branches,
 * which stop the vectoriser and mispredict on random data. */
static inline uint32_t mc_select(uint32_t c, uint32_t a, uint32_t b)
{
    return b ^ ((a ^ b) & (0u - c));
}

/* bfloat16 -> float32: exact (the upper 16 bits). */
static inline float mc_bf16_to_f32(uint16_t h)
{
    return mc_float_of_bits((uint32_t)h << 16);
}

/* float32 -> bfloat16, ties to even; a NaN becomes the quiet NaN 0x7fc0 with its
 * sign (as ml_dtypes and Eigen do). Adding 0x7fff plus the lowest kept bit rounds
 * the discarded half to even and carries into the exponent where it must (up to
 * inf). */
static inline uint16_t mc_f32_to_bf16(float x)
{
    const uint32_t bits = mc_bits_of_float(x);
    return (uint16_t)mc_select((bits & UINT32_C(0x7fffffff)) > UINT32_C(0x7f800000),
                               (bits >> 16 & 0x8000) | 0x7fc0,
                               (bits + UINT32_C(0x7fff) + (bits >> 16 & 1)) >> 16);
}

/* float16 -> float32: exact. A NaN keeps its payload and is made quiet (as F16C's
 * vcvtph2ps does). Without branches (see mc_select). */
static inline float mc_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exponent = h & 0x7c00u;
    const uint32_t mantissa = h & 0x3ffu;
    /* normal: rebias 15 -> 127 */
    const uint32_t normal = ((uint32_t)(h & 0x7fff) << 13) + UINT32_C(0x38000000);
    /* inf, or NaN made quiet */
    const uint32_t special = UINT32_C(0x7f800000) | mantissa << 13 |
                             mc_select(mantissa != 0, UINT32_C(0x400000), 0);
    /* zero or subnormal, mantissa * 2**-24: exact in float32 */
    const uint32_t small = mc_bits_of_float((float)(int32_t)mantissa * 0x1p-24f);
    return mc_float_of_bits(
        sign | mc_select(exponent == 0x7c00u, special, mc_select(exponent != 0, normal, small)));
}

/* float32 -> float16, ties to even, gradual underflow; |x| >= 65520 becomes inf
 * (65520 is the midpoint between 65504, the largest float16, and 2**16, and ties
 * go to the even 2**16); a NaN keeps the top 10 bits of its payload and is made
 * quiet (as vcvtps2ph does). Without branches (see mc_select). */
static inline uint16_t mc_f32_to_f16(float x)
{
    const uint32_t bits = mc_bits_of_float(x);
    const uint32_t sign = bits >> 16 & 0x8000;
    const uint32_t magnitude = bits & UINT32_C(0x7fffffff);
    /* normal in float16 (>= 2**-14): rebias 127 -> 15 and drop 13 bits, ties to
     * even; a carry out of the mantissa moves into the exponent, correctly */
    const uint32_t rebiased = magnitude - UINT32_C(0x38000000);
    const uint32_t normal = (rebiased + UINT32_C(0xfff) + (rebiased >> 13 & 1)) >> 13;
    /* below 2**-14: adding 0.5, whose float32 ulp is 2**-24 (the float16 subnormal
     * step), rounds |x| to a multiple of 2**-24, ties to even, in the FPU's default
     * rounding mode (the one the step's arithmetic assumes too); the bits above
     * 0.5's are the float16 mantissa (0x400: the smallest normal, correctly) */
    const uint32_t small = mc_bits_of_float(mc_float_of_bits(magnitude) + 0.5f) -
                           UINT32_C(0x3f000000);
    const uint32_t special = mc_select(magnitude > UINT32_C(0x7f800000),
                                       0x7e00u | (magnitude >> 13 & 0x3ffu), /* quiet NaN */
                                       0x7c00u);                             /* inf */
    return (uint16_t)(sign | mc_select(magnitude >= UINT32_C(0x477ff000), special,
                                       mc_select(magnitude >= UINT32_C(0x38800000), normal,
                                                 small)));
}

#endif
