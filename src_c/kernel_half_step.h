/*
 * The step on one 16-bit format, chunk by chunk (see kernel_half.h, which defines
 * MC_H, MC_H_EXPMASK, MC_HALF_CHUNK and the conversions of the path).
 *
 * One pass: each chunk of MC_HALF_CHUNK elements is loaded from every stream,
 * widened, stepped by the float32 rule loop and rounded and stored, in registers.
 * The rule loop is the float32 step's own code: inlined here once per rule (its
 * switch resolved at compile time, below), with and without weight decay, so that
 * each chunk runs straight-line code.
 */
#define MC_HNAME(x) MC_CAT3(x, MC_H, MC_ISA)

/* w_new, s_new := the rounded new w and state of the chunk at w, g, s (p: its
 * per-weight momenta, or NULL). w_new and s_new may be w and s. */
MC_TARGET static inline __attribute__((always_inline)) void
MC_HNAME(chunk)(uint16_t *w_new, uint16_t *s_new, const uint16_t *w, const uint16_t *g,
                const uint16_t *s, const uint16_t *p, const mc_hyper *h, const int has_wd)
{
    float wf[MC_HALF_CHUNK] __attribute__((aligned(64)));
    float gf[MC_HALF_CHUNK] __attribute__((aligned(64)));
    float sf[MC_HALF_CHUNK] __attribute__((aligned(64)));
    float pf[MC_HALF_CHUNK] __attribute__((aligned(64)));
    MC_HNAME(load_chunk)(wf, w);
    MC_HNAME(load_chunk)(gf, g);
    MC_HNAME(load_chunk)(sf, s);
    if (p != NULL)
        MC_HNAME(load_chunk)(pf, p);
    MC_RULE_LOOP_F32(wf, gf, sf, p != NULL ? pf : NULL, MC_HALF_CHUNK, h, has_wd, 0);
    MC_HNAME(store_chunk)(w_new, wf);
    MC_HNAME(store_chunk)(s_new, sf);
}

/* Bit 15 of each 16-bit half of MC_H_FLAG(x, k) is set where that half of x is NaN or
 * +-inf (x holds one element with k = 1, two with k = 0x10001): its exponent bits
 * plus the lowest of them carry into bit 15 only when they are all set, and never
 * into the next half. Integer operations: no floating-point exceptions. */
#define MC_H_FLAG(x, k)                                                                  \
    (((x) & (uint32_t)MC_H_EXPMASK * (k)) + (uint32_t)(MC_H_EXPMASK & -MC_H_EXPMASK) * (k))

/* 1 if any of a[0:m], b[0:m], c[0:m] is NaN or +-inf. */
MC_TARGET static inline __attribute__((always_inline)) int
MC_HNAME(any_special)(const uint16_t *a, const uint16_t *b, const uint16_t *c, size_t m)
{
    uint32_t found = 0;
    size_t i;
    for (i = 0; i < m; i++)
        found |= MC_H_FLAG(a[i], 1u) | MC_H_FLAG(b[i], 1u) | MC_H_FLAG(c[i], 1u);
    return (found & 0x8000u) != 0;
}

/* flags[0:MC_HALF_CHUNK/2] |= MC_H_FLAG of each pair of elements of the chunk a: a
 * vector operation per vector, reduced once after the last chunk. */
MC_TARGET static inline __attribute__((always_inline)) void
MC_HNAME(flag_pairs)(uint32_t *restrict flags, const uint16_t *restrict a)
{
    size_t i;
    for (i = 0; i < MC_HALF_CHUNK / 2; i++) {
        uint32_t x;
        memcpy(&x, a + 2 * i, sizeof x);
        flags[i] |= MC_H_FLAG(x, 0x10001u);
    }
}

/* The m <= MC_HALF_BLOCK elements at w, g, s, p with the rule of h looked up at run
 * time, through buffers on the stack (the baseline's step; on the SIMD paths a
 * chunk's head or tail, at most twice per step); the same arithmetic as a chunk's.
 * With dry, writes nothing and returns 1 if their step is not finite (see chunks). */
MC_TARGET static __attribute__((noinline)) int
MC_HNAME(block)(uint16_t *w, const uint16_t *g, uint16_t *s, const uint16_t *p, size_t m,
                const mc_hyper *h, const int dry)
{
    float wf[MC_HALF_BLOCK], gf[MC_HALF_BLOCK], sf[MC_HALF_BLOCK], pf[MC_HALF_BLOCK];
    uint16_t w_new[MC_HALF_BLOCK], s_new[MC_HALF_BLOCK];
    MC_HNAME(widen)(wf, w, m);
    MC_HNAME(widen)(gf, g, m);
    MC_HNAME(widen)(sf, s, m);
    if (p != NULL)
        MC_HNAME(widen)(pf, p, m);
    if (h->weight_decay != 0.0)
        MC_RULE_LOOP_F32(wf, gf, sf, p != NULL ? pf : NULL, m, h, 1, 0);
    else
        MC_RULE_LOOP_F32(wf, gf, sf, p != NULL ? pf : NULL, m, h, 0, 0);
    MC_HNAME(narrow)(dry ? w_new : w, wf, m);
    MC_HNAME(narrow)(dry ? s_new : s, sf, m);
    return dry && MC_HNAME(any_special)(w_new, s_new, g, m);
}

/* With dry == 0: the step on w, s in place. With dry != 0: writes nothing and
 * returns 1 if any g element is NaN or +-inf or any new w or state value would be
 * after its rounding to the format (float16 overflows above 65504, so a finite
 * float32 result can store an inf). The chunks start where w is aligned to a chunk's
 * bytes (64 with AVX-512, 32 with AVX2; the elements before are a partial chunk), so
 * that the vectors of w, and of the streams aligned as w is, do not straddle cache
 * lines (numpy's large arrays start 16 bytes past a page boundary). */
MC_TARGET static inline __attribute__((always_inline)) int
MC_HNAME(chunks)(uint16_t *restrict w,       /* [n] */
                 const uint16_t *restrict g, /* [n] */
                 uint16_t *restrict s,       /* [n] */
                 const uint16_t *restrict p, /* [n] per-weight momentum (MC_QIAN), or NULL */
                 size_t n, const mc_hyper *h, const int rule, const int has_wd, const int dry)
{
    mc_hyper k = *h; /* with the rule as a constant, for the chunks' inlined rule loop */
    uint16_t w_new[MC_HALF_CHUNK], s_new[MC_HALF_CHUNK];
    uint32_t flags[MC_HALF_CHUNK / 2] = {0}, found = 0;
    size_t head = (64 - ((uintptr_t)w & 63)) % 64 / sizeof *w % MC_HALF_CHUNK;
    size_t lo, i;
    k.rule = rule;
    if (head > n)
        head = n;
    if (head > 0 && MC_HNAME(block)(w, g, s, p, head, h, dry))
        return 1;
    for (lo = head; lo + MC_HALF_CHUNK <= n; lo += MC_HALF_CHUNK) {
        const uint16_t *p_lo = p != NULL ? p + lo : NULL;
        if (!dry) {
            MC_HNAME(chunk)(w + lo, s + lo, w + lo, g + lo, s + lo, p_lo, &k, has_wd);
            continue;
        }
        MC_HNAME(chunk)(w_new, s_new, w + lo, g + lo, s + lo, p_lo, &k, has_wd);
        MC_HNAME(flag_pairs)(flags, w_new);
        MC_HNAME(flag_pairs)(flags, s_new);
        MC_HNAME(flag_pairs)(flags, g + lo);
    }
    for (i = 0; i < MC_HALF_CHUNK / 2; i++)
        found |= flags[i] & UINT32_C(0x80008000);
    if (found)
        return 1;
    if (lo < n)
        return MC_HNAME(block)(w + lo, g + lo, s + lo, p != NULL ? p + lo : NULL, n - lo, h,
                               dry);
    return 0;
}

/* chunks with the rule of h and whether it has weight decay known at compile time:
 * one inlined rule loop for each (per-weight momenta only for MC_QIAN, which alone
 * reads them). */
MC_TARGET static inline __attribute__((always_inline)) int
MC_HNAME(by_rule)(uint16_t *restrict w, const uint16_t *restrict g, uint16_t *restrict s,
                  const uint16_t *restrict p, size_t n, const mc_hyper *h, const int dry)
{
    const int has_wd = h->weight_decay != 0.0;
#if MC_LANES_OF(MC_ISA) == 1
    /* the portable path: blocks, the rule looked up once per block */
    size_t lo;
    (void)has_wd;
    for (lo = 0; lo < n; lo += MC_HALF_BLOCK)
        if (MC_HNAME(block)(w + lo, g + lo, s + lo, p != NULL ? p + lo : NULL,
                            n - lo < MC_HALF_BLOCK ? n - lo : MC_HALF_BLOCK, h, dry))
            return 1;
    return 0;
#else
    switch (h->rule) {
#define MC_HALF_RULE_CASE(code, name)                                                   \
    case code:                                                                         \
        if (code == MC_QIAN && p != NULL)                                              \
            return has_wd ? MC_HNAME(chunks)(w, g, s, p, n, h, code, 1, dry)            \
                          : MC_HNAME(chunks)(w, g, s, p, n, h, code, 0, dry);           \
        return has_wd ? MC_HNAME(chunks)(w, g, s, NULL, n, h, code, 1, dry)             \
                      : MC_HNAME(chunks)(w, g, s, NULL, n, h, code, 0, dry);
        MC_RULE_LIST(MC_HALF_RULE_CASE)
#undef MC_HALF_RULE_CASE
    default:
        return 0;
    }
#endif
}

MC_TARGET static void
MC_HNAME(step)(uint16_t *restrict w, const uint16_t *restrict g, uint16_t *restrict s,
               const uint16_t *restrict p, size_t n, const mc_hyper *h)
{
    MC_HNAME(by_rule)(w, g, s, p, n, h, 0);
}

/* 1 if the step would store NaN or +-inf into w or s, or g holds one; writes nothing. */
MC_TARGET static int
MC_HNAME(step_nonfinite)(uint16_t *restrict w, const uint16_t *restrict g,
                         uint16_t *restrict s, const uint16_t *restrict p, size_t n,
                         const mc_hyper *h)
{
    return MC_HNAME(by_rule)(w, g, s, p, n, h, 1);
}

#undef MC_H_FLAG
#undef MC_HNAME
