/*
 * Portable conversions between float32 and the two 16-bit storage formats, as bit
 * patterns (uint16_t): bfloat16 (1 sign, 8 exponent, 7 mantissa bits: float32's
 * upper half) and IEEE binary16 float16 (1, 5, 10).
 *
 * float32 -> half rounds to nearest, ties to even, with overflow to +-inf and
 * gradual underflow (float16 subnormals); NaN stays NaN. These are the roundings of
 * ml_dtypes' and numpy's astype, and of the x86 conversion instructions (F16C
 * vcvtps2ph with imm 0): every path of the kernel stores the same bits.
 * Integer operations only (the one float multiply below is exact), so the result
 * does not depend on the FPU's rounding mode.
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
    if ((bits & UINT32_C(0x7fffffff)) > UINT32_C(0x7f800000))
        return (uint16_t)((bits >> 16 & 0x8000) | 0x7fc0);
    return (uint16_t)((bits + UINT32_C(0x7fff) + (bits >> 16 & 1)) >> 16);
}

/* float16 -> float32: exact. A NaN keeps its payload and is made quiet (as F16C's
 * vcvtph2ps does). */
static inline float mc_f16_to_f32(uint16_t h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    const uint32_t exponent = h >> 10 & 0x1f;
    const uint32_t mantissa = h & 0x3ff;
    if (exponent == 0x1f) /* inf, or NaN made quiet */
        return mc_float_of_bits(sign | UINT32_C(0x7f800000) | mantissa << 13 |
                                (mantissa != 0 ? UINT32_C(0x400000) : 0));
    if (exponent != 0) /* normal: rebias 15 -> 127 */
        return mc_float_of_bits(sign | (exponent + 112) << 23 | mantissa << 13);
    /* zero or subnormal, mantissa * 2**-24: exact in float32 */
    return mc_float_of_bits(sign | mc_bits_of_float((float)mantissa * 0x1p-24f));
}

/* float32 -> float16, ties to even, gradual underflow; |x| >= 65520 becomes inf
 * (65520 is the midpoint between 65504, the largest float16, and 2**16, and ties
 * go to the even 2**16); a NaN keeps the top 10 bits of its payload and is made
 * quiet (as vcvtps2ph does). */
static inline uint16_t mc_f32_to_f16(float x)
{
    const uint32_t bits = mc_bits_of_float(x);
    const uint16_t sign = (uint16_t)(bits >> 16 & 0x8000);
    const uint32_t magnitude = bits & UINT32_C(0x7fffffff);
    if (magnitude > UINT32_C(0x7f800000)) /* NaN */
        return (uint16_t)(sign | 0x7e00 | (magnitude >> 13 & 0x3ff));
    if (magnitude >= UINT32_C(0x477ff000)) /* 65520 and above, inf included */
        return (uint16_t)(sign | 0x7c00);
    if (magnitude >= UINT32_C(0x38800000)) {
        /* normal in float16 (>= 2**-14): rebias 127 -> 15 and drop 13 bits, ties
         * to even; a carry out of the mantissa moves into the exponent, correctly */
        const uint32_t rebiased = magnitude - UINT32_C(0x38000000);
        return (uint16_t)(sign | (rebiased + UINT32_C(0xfff) + (rebiased >> 13 & 1)) >> 13);
    }
    if (magnitude < UINT32_C(0x33000000)) /* below 2**-25: rounds to zero */
        return sign;
    {
        /* subnormal in float16: (1.m * 2**e) / 2**-24 = mantissa >> (126 - e) with
         * e the biased exponent, 102 <= e <= 112, so the shift is 14..24; a result
         * of 0x400 is the smallest normal, correctly encoded */
        const uint32_t mantissa = (magnitude & UINT32_C(0x7fffff)) | UINT32_C(0x800000);
        const uint32_t shift = 126 - (magnitude >> 23);
        const uint32_t kept = mantissa >> shift;
        const uint32_t rest = mantissa & ((UINT32_C(1) << shift) - 1);
        const uint32_t halfway = UINT32_C(1) << (shift - 1);
        return (uint16_t)(sign | (kept + (rest > halfway || (rest == halfway && (kept & 1)))));
    }
}

#endif
