/*
 * The blocked step on one 16-bit format (see kernel_half.h, which defines MC_H,
 * MC_H_EXPMASK and the widen/narrow functions of the path).
 */
#define MC_HNAME(x) MC_CAT3(x, MC_H, MC_ISA)

/* With dry == 0: the step on w, s in place. With dry != 0: writes nothing and
 * returns 1 if any g element is NaN or +-inf or any new w or state value would be
 * after its rounding to the format (float16 overflows above 65504, so a finite
 * float32 result can store an inf). */
MC_TARGET static inline __attribute__((always_inline)) int
MC_HNAME(blocks)(uint16_t *restrict w,       /* [n] */
                 const uint16_t *restrict g, /* [n] */
                 uint16_t *restrict s,       /* [n] */
                 const uint16_t *restrict p, /* [n] per-weight momentum (MC_QIAN), or NULL */
                 size_t n, const mc_hyper *h, const int dry)
{
    float wf[MC_HALF_BLOCK] __attribute__((aligned(64)));
    float gf[MC_HALF_BLOCK] __attribute__((aligned(64)));
    float sf[MC_HALF_BLOCK] __attribute__((aligned(64)));
    float pf[MC_HALF_BLOCK] __attribute__((aligned(64)));
    uint16_t w_new[MC_HALF_BLOCK], s_new[MC_HALF_BLOCK];
    const int has_wd = h->weight_decay != 0.0;
    size_t lo, i;
    for (lo = 0; lo < n; lo += MC_HALF_BLOCK) {
        const size_t m = n - lo < MC_HALF_BLOCK ? n - lo : MC_HALF_BLOCK;
        MC_HNAME(widen)(wf, w + lo, m);
        MC_HNAME(widen)(gf, g + lo, m);
        MC_HNAME(widen)(sf, s + lo, m);
        if (p != NULL)
            MC_HNAME(widen)(pf, p + lo, m);
        if (has_wd)
            MC_RULE_LOOP_F32(wf, gf, sf, p != NULL ? pf : NULL, m, h, 1, 0);
        else
            MC_RULE_LOOP_F32(wf, gf, sf, p != NULL ? pf : NULL, m, h, 0, 0);
        if (!dry) {
            MC_HNAME(narrow)(w + lo, wf, m);
            MC_HNAME(narrow)(s + lo, sf, m);
            continue;
        }
        MC_HNAME(narrow)(w_new, wf, m);
        MC_HNAME(narrow)(s_new, sf, m);
        {
            unsigned found = 0;
            for (i = 0; i < m; i++)
                found |= ((w_new[i] & MC_H_EXPMASK) == MC_H_EXPMASK) |
                         ((s_new[i] & MC_H_EXPMASK) == MC_H_EXPMASK) |
                         ((g[lo + i] & MC_H_EXPMASK) == MC_H_EXPMASK);
            if (found)
                return 1;
        }
    }
    return 0;
}

MC_TARGET static void
MC_HNAME(step)(uint16_t *restrict w, const uint16_t *restrict g, uint16_t *restrict s,
               const uint16_t *restrict p, size_t n, const mc_hyper *h)
{
    MC_HNAME(blocks)(w, g, s, p, n, h, 0);
}

/* 1 if the step would store NaN or +-inf into w or s, or g holds one; writes nothing. */
MC_TARGET static int
MC_HNAME(step_nonfinite)(uint16_t *restrict w, const uint16_t *restrict g,
                         uint16_t *restrict s, const uint16_t *restrict p, size_t n,
                         const mc_hyper *h)
{
    return MC_HNAME(blocks)(w, g, s, p, n, h, 1);
}

#undef MC_HNAME
