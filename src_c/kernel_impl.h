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

/* 1 (as MC_BITS) if x is NaN or +-inf: its exponent bits all set. */
MC_TARGET static inline __attribute__((always_inline)) MC_BITS
MC_NAME(nonfinite_bits)(MC_T x)
{
    MC_BITS bits;
    memcpy(&bits, &x, sizeof bits);
    return (MC_BITS)((bits & MC_EXPMASK) == MC_EXPMASK);
}

/* Applies `rule` to n elements; has_wd is a compile-time constant after
 * inlining, so each rule gets a loop with and a loop without weight decay.
 * With dry (also a constant) nothing is written: the loop computes the new w
 * and state and returns nonzero if any of them, or any g, is NaN or +-inf (the
 * exponent bits tested as integers, so the scan vectorises without any
 * floating-point exception). */
MC_TARGET static inline __attribute__((always_inline)) MC_BITS
MC_NAME(rule_loop)(MC_T *restrict w,       /* [n] */
                   const MC_T *restrict g, /* [n] */
                   MC_T *restrict s,       /* [n] */
                   const MC_T *restrict p, /* [n] per-weight momentum (MC_QIAN), or NULL */
                   size_t n, const mc_hyper *h, const int has_wd, const int dry)
{
    const MC_T lr = (MC_T)h->lr;
    const MC_T neg_lr = (MC_T)(-h->lr);
    const MC_T mom = (MC_T)h->momentum;
    const MC_T wd = (MC_T)h->weight_decay;
    MC_BITS found = 0;
    size_t i;
#define MC_GRAD(i) (has_wd ? g[i] + wd * w[i] : g[i])
#define MC_NONFINITE(x) MC_NAME(nonfinite_bits)(x)
/* dst[i] := v, or with dry: note whether v (or g[i]) is not finite */
#define MC_PUT(dst, i, v)                                                       \
    do {                                                                        \
        if (dry)                                                                \
            found |= MC_NONFINITE(v) | MC_NONFINITE(g[i]);                      \
        else                                                                    \
            (dst)[i] = (v);                                                     \
    } while (0)
    switch (h->rule) {
    case MC_QIAN:
        /* classical with the momentum of each weight read from p: one more read
         * stream, the same operations in the same order; without p, classical */
        if (p != NULL) {
            for (i = 0; i < n; i++) {
                const MC_T gi = MC_GRAD(i);
                const MC_T si = p[i] * s[i] - lr * gi;
                const MC_T wi = w[i] + si;
                MC_PUT(s, i, si);
                MC_PUT(w, i, wi);
            }
            break;
        }
        /* fall through */
    case MC_CLASSICAL:
        for (i = 0; i < n; i++) {
            const MC_T gi = MC_GRAD(i);
            const MC_T si = mom * s[i] - lr * gi;
            const MC_T wi = w[i] + si;
            MC_PUT(s, i, si);
            MC_PUT(w, i, wi);
        }
        break;
    case MC_NESTEROV:
        for (i = 0; i < n; i++) {
            const MC_T gi = MC_GRAD(i);
            const MC_T si = mom * s[i] - lr * gi;
            const MC_T wi = (w[i] + mom * si) - lr * gi;
            MC_PUT(s, i, si);
            MC_PUT(w, i, wi);
        }
        break;
    case MC_VELOCITY:
    case MC_EMA: {
        const double d = h->rule == MC_EMA ? h->momentum : h->dampening;
        const MC_T keep = (MC_T)(1.0 - d);
        for (i = 0; i < n; i++) {
            const MC_T gi = MC_GRAD(i);
            const MC_T si = mom * s[i] + keep * gi;
            const MC_T wi = w[i] - lr * si;
            MC_PUT(s, i, si);
            MC_PUT(w, i, wi);
        }
        break;
    }
    case MC_ONE_STEP:
        for (i = 0; i < n; i++) {
            const MC_T gi = MC_GRAD(i);
            const MC_T step = neg_lr * gi;
            const MC_T wi = (w[i] + step) + mom * s[i];
            MC_PUT(w, i, wi);
            MC_PUT(s, i, step);
        }
        break;
    case MC_NESTEROV_VELOCITY:
        for (i = 0; i < n; i++) {
            const MC_T gi = MC_GRAD(i);
            const MC_T si = mom * s[i] + gi;
            const MC_T wi = w[i] - lr * (gi + mom * si);
            MC_PUT(s, i, si);
            MC_PUT(w, i, wi);
        }
        break;
    default:
        break;
    }
#undef MC_PUT
#undef MC_NONFINITE
#undef MC_GRAD
    return found;
}

MC_TARGET static void
MC_NAME(step)(MC_T *restrict w, const MC_T *restrict g, MC_T *restrict s,
              const MC_T *restrict p, size_t n, const mc_hyper *h)
{
    if (h->weight_decay != 0.0)
        MC_NAME(rule_loop)(w, g, s, p, n, h, 1, 0);
    else
        MC_NAME(rule_loop)(w, g, s, p, n, h, 0, 0);
}

/* 1 if the step of `h` would write NaN or +-inf into w[0:n] or s[0:n], or some
 * element of g[0:n] is NaN or +-inf; writes nothing. The same arithmetic as
 * MC_NAME(step), so a step this accepts stays finite. */
MC_TARGET static int
MC_NAME(step_nonfinite)(MC_T *restrict w, const MC_T *restrict g, MC_T *restrict s,
                        const MC_T *restrict p, size_t n, const mc_hyper *h)
{
    if (h->weight_decay != 0.0)
        return MC_NAME(rule_loop)(w, g, s, p, n, h, 1, 1) != 0;
    return MC_NAME(rule_loop)(w, g, s, p, n, h, 0, 1) != 0;
}

/* Nonzero if any of x[0:n] is NaN or +-inf: the exponent bits tested as integers (no
 * floating-point exception), block by block in loops the compiler vectorises, stopping
 * after the first block that holds one. */
MC_TARGET static int MC_NAME(any_nonfinite)(const MC_T *restrict x, size_t n)
{
    size_t i0 = 0, i;
    while (i0 < n) {
        const size_t i1 = n - i0 > MC_FINITE_BLOCK ? i0 + MC_FINITE_BLOCK : n;
        MC_BITS found = 0;
        for (i = i0; i < i1; i++)
            found |= MC_NAME(nonfinite_bits)(x[i]);
        if (found)
            return 1;
        i0 = i1;
    }
    return 0;
}
