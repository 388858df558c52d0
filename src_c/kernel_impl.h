/*
 * Kernel template: included by momentum.c once per (SIMD path, element type).
 *
 * Before including, define:
 *   MC_T        element type (float or double)
 *   MC_BITS     unsigned integer type of the same width (uint32_t or uint64_t)
 *   MC_EXPMASK  the exponent bits of MC_T (all set for NaN and +-inf)
 *   MC_NAME(x)  x suffixed with the type and the path, e.g. x##_f64_avx2
 *   MC_TARGET   the function attribute that selects the path (may be empty)
 *
 * The loops are written plainly and left to the compiler's vectoriser; built
 * with -ffp-contract=off so that every path rounds the same way.
 */

/* Applies `rule` to n elements; has_wd is a compile-time constant after
 * inlining, so each rule gets a loop with and a loop without weight decay. */
MC_TARGET static inline __attribute__((always_inline)) void
MC_NAME(rule_loop)(MC_T *restrict w,       /* [n] */
                   const MC_T *restrict g, /* [n] */
                   MC_T *restrict s,       /* [n] */
                   const MC_T *restrict p, /* [n] per-weight momentum (MC_QIAN), or NULL */
                   size_t n, const mc_hyper *h, const int has_wd)
{
    const MC_T lr = (MC_T)h->lr;
    const MC_T neg_lr = (MC_T)(-h->lr);
    const MC_T mom = (MC_T)h->momentum;
    const MC_T wd = (MC_T)h->weight_decay;
    size_t i;
#define MC_GRAD(i) (has_wd ? g[i] + wd * w[i] : g[i])
    switch (h->rule) {
    case MC_CLASSICAL:
        for (i = 0; i < n; i++) {
            const MC_T gi = MC_GRAD(i);
            const MC_T si = mom * s[i] - lr * gi;
            s[i] = si;
            w[i] = w[i] + si;
        }
        break;
    case MC_NESTEROV:
        for (i = 0; i < n; i++) {
            const MC_T gi = MC_GRAD(i);
            const MC_T si = mom * s[i] - lr * gi;
            s[i] = si;
            w[i] = (w[i] + mom * si) - lr * gi;
        }
        break;
    case MC_VELOCITY:
    case MC_EMA: {
        const double d = h->rule == MC_EMA ? h->momentum : h->dampening;
        const MC_T keep = (MC_T)(1.0 - d);
        for (i = 0; i < n; i++) {
            const MC_T gi = MC_GRAD(i);
            const MC_T si = mom * s[i] + keep * gi;
            s[i] = si;
            w[i] = w[i] - lr * si;
        }
        break;
    }
    case MC_ONE_STEP:
        for (i = 0; i < n; i++) {
            const MC_T gi = MC_GRAD(i);
            const MC_T step = neg_lr * gi;
            w[i] = (w[i] + step) + mom * s[i];
            s[i] = step;
        }
        break;
    case MC_NESTEROV_VELOCITY:
        for (i = 0; i < n; i++) {
            const MC_T gi = MC_GRAD(i);
            const MC_T si = mom * s[i] + gi;
            s[i] = si;
            w[i] = w[i] - lr * (gi + mom * si);
        }
        break;
    case MC_QIAN:
        /* classical with the momentum of each weight read from p: one more read
         * stream, the same operations in the same order */
        if (p == NULL) {
            for (i = 0; i < n; i++) {
                const MC_T gi = MC_GRAD(i);
                const MC_T si = mom * s[i] - lr * gi;
                s[i] = si;
                w[i] = w[i] + si;
            }
        } else {
            for (i = 0; i < n; i++) {
                const MC_T gi = MC_GRAD(i);
                const MC_T si = p[i] * s[i] - lr * gi;
                s[i] = si;
                w[i] = w[i] + si;
            }
        }
        break;
    default:
        break;
    }
#undef MC_GRAD
}

MC_TARGET static void
MC_NAME(step)(MC_T *restrict w, const MC_T *restrict g, MC_T *restrict s,
              const MC_T *restrict p, size_t n, const mc_hyper *h)
{
    if (h->weight_decay != 0.0)
        MC_NAME(rule_loop)(w, g, s, p, n, h, 1);
    else
        MC_NAME(rule_loop)(w, g, s, p, n, h, 0);
}

/* 1 if some element of g[0:n] is NaN or +-inf. Looks at the exponent bits only,
 * as integers, so the scan vectorises without any floating-point exception. */
MC_TARGET static int
MC_NAME(any_nonfinite)(const MC_T *restrict g, size_t n)
{
    MC_BITS found = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        MC_BITS bits;
        memcpy(&bits, &g[i], sizeof bits);
        found |= (MC_BITS)((bits & MC_EXPMASK) == MC_EXPMASK);
    }
    return found != 0;
}
