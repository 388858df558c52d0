/*
 * MLP passes template: included (through mlp_types.h) once per element type and
 * SIMD path.
 *
 * Before including, define MC_T (float or double), MC_NAME(x) (x with a type
 * suffix), MC_GEMM (the registered ?gemm pointer), MC_MATH_EXP, MC_MATH_LOG, MC_MATH_TANH,
 * MC_MATH_FABS (the libm functions of MC_T), MC_TINY (smallest normal MC_T) and
 * MC_TARGET (the function attribute of the SIMD path, may be empty).
 *
 * Legend: B = batch rows, I = layer inputs, O = layer outputs.
 */

#ifndef MC_VECTOR_BYTES
/* The bytes of a vector register on each SIMD path (see simd.h), and MC_LANES(T), the
 * elements of T one holds: loops of a fixed MC_LANES trip count, with the elements
 * past a row's width masked out of their loads and stores (a ? : on each load, an if
 * on each store), run as one vector operation each on the paths with masked moves
 * (AVX2, AVX-512), where a loop to the row's width would run a width below the lane
 * count as scalar remainder code. */
#define MC_VECTOR_BYTES_baseline 16
#define MC_VECTOR_BYTES_avx2 32
#define MC_VECTOR_BYTES_avx512 64
#define MC_VECTOR_BYTES_OF_(isa) MC_VECTOR_BYTES_##isa
#define MC_VECTOR_BYTES_OF(isa) MC_VECTOR_BYTES_OF_(isa)
#define MC_VECTOR_BYTES MC_VECTOR_BYTES_OF(MC_ISA)
#define MC_LANES(T) (MC_VECTOR_BYTES / sizeof(T))
/* GCC's unroll-and-jam (-O3) fuses pairs of rows of a loop over rows whose row is one
 * vector: into scalar code (online_narrow's sweeps), or into one loop that keeps the
 * row sums in memory, one store and reload a row (MC_NARROW_ROW); off for those
 * functions. */
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 8
#define MC_NO_UNROLL_AND_JAM __attribute__((optimize("no-loop-unroll-and-jam")))
#else
#define MC_NO_UNROLL_AND_JAM
#endif
/* Before a loop that calls vmath.h's exp or tanh: vectorised where the compiler calls
 * their vector variants (GCC; clang warns of an omp simd it cannot honour there). */
#if MC_VMATH && !defined(__clang__)
#define MC_SIMD_CALLS _Pragma("omp simd")
#else
#define MC_SIMD_CALLS
#endif
/* APPLY(A) with A the activation code act as a constant (code for each activation,
 * each with its branches folded away) */
#define MC_BY_ACTIVATION(act, APPLY)                                                     \
    switch (act) {                                                                       \
    case MC_SIGMOID:                                                                     \
        APPLY(MC_SIGMOID);                                                               \
        break;                                                                           \
    case MC_TANH:                                                                        \
        APPLY(MC_TANH);                                                                  \
        break;                                                                           \
    case MC_RELU:                                                                        \
        APPLY(MC_RELU);                                                                  \
        break;                                                                           \
    case MC_SOFTMAX:                                                                     \
        APPLY(MC_SOFTMAX);                                                               \
        break;                                                                           \
    default:                                                                             \
        APPLY(MC_IDENTITY);                                                              \
    }
/* Whether GCC turns a store under a condition into a masked store: on AVX-512; on the
 * other paths (GCC 12 at least) such a loop stays scalar, one branch a lane. */
#define MC_MASKED_STORES_baseline 0
#define MC_MASKED_STORES_avx2 0
#define MC_MASKED_STORES_avx512 1
#define MC_MASKED_STORES_OF_(isa) MC_MASKED_STORES_##isa
#define MC_MASKED_STORES_OF(isa) MC_MASKED_STORES_OF_(isa)
/* dst[j] = src[j] for the j < n <= SIZE (a constant): masked stores where there are,
 * a loop to n elsewhere */
#define MC_STORE_FIRST(dst, src, n, SIZE)                                                \
    do {                                                                                 \
        size_t j_;                                                                       \
        if (MC_MASKED_STORES_OF(MC_ISA)) {                                               \
            _Pragma("omp simd")                                                          \
            for (j_ = 0; j_ < (SIZE); j_++)                                              \
                if (j_ < (n))                                                            \
                    (dst)[j_] = (src)[j_];                                               \
        } else {                                                                         \
            for (j_ = 0; j_ < (n); j_++)                                                 \
                (dst)[j_] = (src)[j_];                                                   \
        }                                                                                \
    } while (0)
#define MC_STORE_LANES(dst, src, n) MC_STORE_FIRST(dst, src, n, MC_LANES(MC_T))
/* activate_lanes's code for exp alone (after every activation's) */
#define MC_EXP_LANES MC_N_ACTIVATIONS
/* A small helper inlined into every caller, whatever their optimisation attributes
 * (GCC does not inline across differing ones otherwise). */
#if defined(__GNUC__)
#define MC_ALWAYS_INLINE __attribute__((always_inline))
#else
#define MC_ALWAYS_INLINE
#endif
#endif

/* Row-major C[M,N] := alpha op(A)[M,K] op(B)[K,N] + beta C on column-major BLAS:
 * the same product transposed, C^T = alpha op(B)^T op(A)^T + beta C^T. */
MC_TARGET static void MC_NAME(gemm_rm)(int trans_a, int trans_b, size_t M, size_t N, size_t K,
                             MC_T alpha, const MC_T *A, size_t lda, const MC_T *B_,
                             size_t ldb, MC_T beta, MC_T *C, size_t ldc)
{
    char ta = trans_a ? 'T' : 'N', tb = trans_b ? 'T' : 'N';
    int m = (int)N, n = (int)M, k = (int)K, la = (int)lda, lb = (int)ldb, lc = (int)ldc;
    MC_GEMM(&tb, &ta, &m, &n, &k, &alpha, (MC_T *)B_, &lb, (MC_T *)A, &la, &beta, C, &lc);
}

MC_TARGET static int MC_NAME(use_gemm)(size_t B, size_t I, size_t O)
{
    return MC_GEMM != NULL && B * I * O >= MC_GEMM_MIN_MACS;
}

/* The sum (largest 0) or the largest by > (largest 1) of the MC_LANES values of v,
 * halves combined pairwise (the order of a vector's horizontal reduction): a step for
 * each half = MC_LANES/2, ..., 1, each a loop of fixed count that the compiler turns
 * into one vector operation. */
MC_TARGET MC_ALWAYS_INLINE static inline MC_T MC_NAME(lanes_reduce)(const MC_T *v,
                                                                    int largest)
{
    MC_T t[MC_LANES(MC_T)];
    size_t j;
    for (j = 0; j < MC_LANES(MC_T); j++)
        t[j] = v[j];
#define MC_HALVE(half)                                                                   \
    if (MC_LANES(MC_T) >= 2 * (half)) {                                                  \
        _Pragma("omp simd")                                                              \
        for (j = 0; j < (half); j++)                                                     \
            t[j] = largest ? (t[j + (half)] > t[j] ? t[j + (half)] : t[j])               \
                           : t[j] + t[j + (half)];                                       \
    }
    MC_HALVE(16)
    MC_HALVE(8)
    MC_HALVE(4)
    MC_HALVE(2)
    MC_HALVE(1)
#undef MC_HALVE
    return t[0];
}

MC_TARGET MC_ALWAYS_INLINE static inline MC_T MC_NAME(lanes_sum)(const MC_T *v)
{
    return MC_NAME(lanes_reduce)(v, 0);
}

MC_TARGET MC_ALWAYS_INLINE static inline MC_T MC_NAME(lanes_max)(const MC_T *v)
{
    return MC_NAME(lanes_reduce)(v, 1);
}

/* x[MC_LANES] := f(x) lane by lane, or the softmax over its first width lanes (then 0
 * past them), in registers: one vector call of exp or tanh. The lanes past width must
 * hold finite values (0 from a masked load), which exp and tanh see. */
MC_TARGET MC_ALWAYS_INLINE static inline void MC_NAME(activate_lanes)(MC_T *x, size_t width,
                                                                      int act)
{
    enum { L = MC_LANES(MC_T) };
    MC_T e[L], top;
    size_t j;
    switch (act) {
    case MC_SIGMOID:
        /* exp sees only -|z| <= 0: no overflow, full precision in both tails */
        MC_SIMD_CALLS
        for (j = 0; j < L; j++) {
            const MC_T t = MC_MATH_EXP(-MC_MATH_FABS(x[j]));
            x[j] = (x[j] >= 0 ? (MC_T)1 : t) / ((MC_T)1 + t);
        }
        break;
    case MC_TANH:
        MC_SIMD_CALLS
        for (j = 0; j < L; j++)
            x[j] = MC_MATH_TANH(x[j]);
        break;
    case MC_RELU:
        _Pragma("omp simd")
        for (j = 0; j < L; j++)
            x[j] = x[j] < 0 ? (MC_T)0 : x[j]; /* NaN stays NaN */
        break;
    case MC_SOFTMAX:
        /* past the row -inf, never the largest, and e = 0; exp sees 0 there (a vector
         * exp may take a slow path for -inf). x is read in every lane (a read under a
         * condition would keep x in memory in the caller's loops too). */
        _Pragma("omp simd")
        for (j = 0; j < L; j++) {
            const MC_T xj = x[j];
            e[j] = j < width ? xj : -(MC_T)INFINITY;
        }
        top = MC_NAME(lanes_max)(e);
        _Pragma("omp simd")
        for (j = 0; j < L; j++) {
            const MC_T shifted = x[j] - top;
            e[j] = j < width ? shifted : (MC_T)0;
        }
        MC_SIMD_CALLS
        for (j = 0; j < L; j++) /* a loop of calls alone: vectorised on every path */
            e[j] = MC_MATH_EXP(e[j]);
        _Pragma("omp simd")
        for (j = 0; j < L; j++)
            e[j] = j < width ? e[j] : (MC_T)0;
        top = MC_NAME(lanes_sum)(e);
        _Pragma("omp simd")
        for (j = 0; j < L; j++)
            x[j] = e[j] / top;
        break;
    case MC_EXP_LANES:
        MC_SIMD_CALLS
        for (j = 0; j < L; j++)
            x[j] = MC_MATH_EXP(x[j]);
        break;
    default: /* identity */
        break;
    }
}

/* acc[MC_LANES] := f(in[I] W[I,O] + b[O]) for a row no wider than a vector (O <=
 * MC_LANES; 0 past O before f), activation ACT (a constant), in registers: each
 * output the sum over k in order, as acc += x * w (see online_layer). */
#define MC_NARROW_ROW(acc, in, W, b, I, O, ACT)                                          \
    do {                                                                                 \
        size_t j_, k_;                                                                   \
        for (j_ = 0; j_ < MC_LANES(MC_T); j_++)                                          \
            (acc)[j_] = 0;                                                               \
        for (k_ = 0; k_ < (I); k_++) {                                                   \
            const MC_T x_ = (in)[k_];                                                    \
            const MC_T *restrict w_ = (W) + k_ * (O);                                    \
            _Pragma("omp simd")                                                          \
            for (j_ = 0; j_ < MC_LANES(MC_T); j_++)                                      \
                (acc)[j_] += x_ * (j_ < (O) ? w_[j_] : (MC_T)0);                         \
        }                                                                                \
        _Pragma("omp simd")                                                              \
        for (j_ = 0; j_ < MC_LANES(MC_T); j_++)                                          \
            (acc)[j_] = (acc)[j_] + (j_ < (O) ? (b)[j_] : (MC_T)0);                      \
        MC_NAME(activate_lanes)(acc, O, ACT);                                            \
    } while (0)

/* z[O] := f(z + b) for one row; softmax over the row. In blocks of MC_LANES, the last
 * one masked (see MC_LANES): one vector call of exp or tanh a block, where a loop to
 * the row's width would call the scalar function on its remainder; a row no wider
 * than a block in registers throughout (activate_lanes), softmax too. */
MC_TARGET static void MC_NAME(bias_activate_row)(MC_T *z, const MC_T *b, size_t O, int act)
{
    enum { L = MC_LANES(MC_T) };
    size_t j0, j;
/* For each block (zz, bb) of the row: x[j] = X for the elements j of the row (0 past
 * it), then APPLY (on x), then zz[j] = x[j] for the elements of the row. Each loop one
 * vector operation (a loop that both reads and writes under the mask and calls exp in
 * between does not vectorise). */
#define MC_ROW_BLOCKS(X, APPLY)                                                          \
    for (j0 = 0; j0 < O; j0 += L) {                                                      \
        MC_T *restrict zz = z + j0;                                                      \
        const MC_T *restrict bb = b + j0;                                                \
        const size_t width = O - j0 < L ? O - j0 : L;                                    \
        MC_T x[L];                                                                       \
        (void)bb;                                                                        \
        if (width == L) {                                                                \
            _Pragma("omp simd")                                                          \
            for (j = 0; j < L; j++)                                                      \
                x[j] = X;                                                                \
        } else {                                                                         \
            _Pragma("omp simd")                                                          \
            for (j = 0; j < L; j++)                                                      \
                x[j] = j < width ? X : (MC_T)0;                                          \
        }                                                                                \
        APPLY;                                                                           \
        if (width == L) {                                                                \
            _Pragma("omp simd")                                                          \
            for (j = 0; j < L; j++)                                                      \
                zz[j] = x[j];                                                            \
        } else {                                                                         \
            MC_STORE_LANES(zz, x, width);                                                \
        }                                                                                \
    }
    if (act == MC_SOFTMAX && O > L) { /* the largest z, exp(z - top), their sum */
        MC_T top, sum = 0;
        for (j = 0; j < O; j++)
            z[j] = z[j] + b[j];
        top = z[0];
        for (j = 1; j < O; j++)
            top = z[j] > top ? z[j] : top;
        MC_ROW_BLOCKS(zz[j] - top, MC_NAME(activate_lanes)(x, L, MC_EXP_LANES));
        for (j = 0; j < O; j++)
            sum += z[j];
        for (j = 0; j < O; j++)
            z[j] = z[j] / sum;
    } else {
#define MC_BLOCKS_OF(ACT) MC_ROW_BLOCKS(zz[j] + bb[j], MC_NAME(activate_lanes)(x, width, ACT))
        MC_BY_ACTIVATION(act, MC_BLOCKS_OF)
#undef MC_BLOCKS_OF
    }
#undef MC_ROW_BLOCKS
}

/* out[B,O] := f(in[B,I] W[I,O] + b[O]): gemm or plain loops, then one sweep
 * adding the bias and applying f; rows no wider than a vector (O <= MC_LANES) on
 * loops in registers throughout: the sum, the bias, f (as bias_activate_row takes
 * them), one store. */
MC_TARGET MC_NO_UNROLL_AND_JAM static void MC_NAME(dense_forward)(MC_T *out, const MC_T *in, const MC_T *W, const MC_T *b,
                                   size_t B, size_t I, size_t O, int act)
{
    enum { L = MC_LANES(MC_T) };
    size_t r, k, j;
    if (MC_NAME(use_gemm)(B, I, O)) {
        MC_NAME(gemm_rm)(0, 0, B, O, I, 1, in, I, W, O, 0, out, O);
    } else if (O <= L) {
#define MC_FORWARD_NARROW(ACT)                                                           \
    for (r = 0; r < B; r++) {                                                            \
        MC_T acc[L];                                                                     \
        MC_NARROW_ROW(acc, in + r * I, W, b, I, O, ACT);                                 \
        MC_STORE_LANES(out + r * O, acc, O);                                             \
    }
        MC_BY_ACTIVATION(act, MC_FORWARD_NARROW)
#undef MC_FORWARD_NARROW
        return;
    } else {
        /* Blocks of MC_FORWARD_BLOCK outputs are summed over all inputs in a
         * fixed-size accumulator the compiler keeps in registers; each output is
         * still the sum over k in order. The last, narrower block too: in an
         * accumulator of MC_LANES, MC_FORWARD_BLOCK/2 or MC_FORWARD_BLOCK outputs whose
         * loads past its width are masked (a loop to a variable width would keep it in
         * memory, one store and reload per input). */
#define MC_FORWARD_SUM(SIZE)                                                             \
    do {                                                                                 \
        MC_T acc[SIZE];                                                                  \
        for (j = 0; j < SIZE; j++)                                                       \
            acc[j] = 0;                                                                  \
        if (width == SIZE)                                                               \
            for (k = 0; k < I; k++) {                                                    \
                const MC_T x = in[r * I + k];                                            \
                const MC_T *restrict w = W + k * O + j0;                                 \
                _Pragma("omp simd")                                                      \
                for (j = 0; j < SIZE; j++)                                               \
                    acc[j] += x * w[j];                                                  \
            }                                                                            \
        else                                                                             \
            for (k = 0; k < I; k++) {                                                    \
                const MC_T x = in[r * I + k];                                            \
                const MC_T *restrict w = W + k * O + j0;                                 \
                _Pragma("omp simd")                                                      \
                for (j = 0; j < SIZE; j++)                                               \
                    acc[j] += x * (j < width ? w[j] : (MC_T)0);                          \
            }                                                                            \
        if (width == SIZE) {                                                             \
            _Pragma("omp simd")                                                          \
            for (j = 0; j < SIZE; j++)                                                   \
                out[r * O + j0 + j] = acc[j];                                            \
        } else {                                                                         \
            MC_STORE_FIRST(out + r * O + j0, acc, width, SIZE);                          \
        }                                                                                \
    } while (0)
        for (r = 0; r < B; r++) {
            size_t j0;
            for (j0 = 0; j0 < O; j0 += MC_FORWARD_BLOCK) {
                const size_t width = O - j0 < MC_FORWARD_BLOCK ? O - j0 : MC_FORWARD_BLOCK;
                if (width <= MC_LANES(MC_T))
                    MC_FORWARD_SUM(MC_LANES(MC_T));
                else if (width <= MC_FORWARD_BLOCK / 2)
                    MC_FORWARD_SUM(MC_FORWARD_BLOCK / 2);
                else
                    MC_FORWARD_SUM(MC_FORWARD_BLOCK);
            }
        }
#undef MC_FORWARD_SUM
    }
    for (r = 0; r < B; r++)
        MC_NAME(bias_activate_row)(out + r * O, b, O, act);
}

/* f'(z) of the hidden activation act, written in terms of a = f(z) (1 for the
 * identity). */
MC_TARGET MC_ALWAYS_INLINE static inline MC_T MC_NAME(derivative)(MC_T a, int act)
{
    switch (act) {
    case MC_SIGMOID:
        return a * ((MC_T)1 - a);
    case MC_TANH:
        return (MC_T)1 - a * a;
    case MC_RELU: /* multiplied, not selected: a NaN delta stays NaN */
        return (MC_T)(a > 0);
    default:
        return 1;
    }
}

/* delta[B,I] *= f'(z), with f' written in terms of a = f(z) [B,I]. */
MC_TARGET static void MC_NAME(times_derivative)(MC_T *delta, const MC_T *a, size_t n, int act)
{
    size_t i;
#define MC_TIMES_DERIVATIVE(ACT)                                                         \
    for (i = 0; i < n; i++)                                                              \
        delta[i] *= MC_NAME(derivative)(a[i], ACT);
    switch (act) {
    case MC_SIGMOID:
        MC_TIMES_DERIVATIVE(MC_SIGMOID)
        break;
    case MC_TANH:
        MC_TIMES_DERIVATIVE(MC_TANH)
        break;
    case MC_RELU:
        MC_TIMES_DERIVATIVE(MC_RELU)
        break;
    default:
        break;
    }
#undef MC_TIMES_DERIVATIVE
}

/* log max(x, tiny): the clamp keeps log finite and lets a NaN through. */
#define MC_SAFE_LOG(x) MC_MATH_LOG((x) < MC_TINY ? MC_TINY : (x))

/* dE/dz of one output unit of one row, for the per-sample `loss` (see mc_loss) of
 * output y (of activation `output`) against target t, before the division by the
 * batch's rows. */
MC_TARGET MC_ALWAYS_INLINE static inline MC_T MC_NAME(unit_delta)(MC_T y, MC_T t, int output,
                                                                  int loss)
{
    if (loss == MC_SQUARED_ERROR && output == MC_SIGMOID)
        return (y - t) * (y * ((MC_T)1 - y));
    return y - t;
}

/* The per-sample `loss` of one row of outputs y[O] against targets t[O]. */
MC_TARGET MC_ALWAYS_INLINE static inline double MC_NAME(row_loss)(const MC_T *y, const MC_T *t,
                                                                  size_t O, int loss)
{
    MC_T sum = 0;
    size_t j;
    switch (loss) {
    case MC_CROSS_ENTROPY:
        /* a zero target adds nothing (y is finite or the row is all NaN) */
        for (j = 0; j < O; j++)
            if (t[j] != 0)
                sum -= t[j] * MC_SAFE_LOG(y[j]);
        return (double)sum;
    case MC_BINARY_CROSS_ENTROPY:
        for (j = 0; j < O; j++) {
            const MC_T off = (MC_T)1 - t[j];
            if (t[j] != 0)
                sum -= t[j] * MC_SAFE_LOG(y[j]);
            if (off != 0)
                sum -= off * MC_SAFE_LOG((MC_T)1 - y[j]);
        }
        return (double)sum;
    default: /* MC_SQUARED_ERROR */
        for (j = 0; j < O; j++) {
            const MC_T e = y[j] - t[j];
            sum += e * e;
        }
        return 0.5 * (double)sum;
    }
}
#undef MC_SAFE_LOG

/* Whether `accuracy` (see mc_accuracy; not MC_ACC_NONE) counts one row of outputs
 * y[O] correct against targets t[O]. */
MC_TARGET MC_ALWAYS_INLINE static inline int MC_NAME(row_correct)(const MC_T *y, const MC_T *t,
                                                                  size_t O, int accuracy)
{
    size_t j;
    if (accuracy == MC_ACC_ARGMAX) { /* the first largest of each (the values kept
                                      * in registers: no load waits for the last) */
        size_t best_y = 0, best_t = 0;
        MC_T top_y = y[0], top_t = t[0];
        for (j = 1; j < O; j++) {
            if (y[j] > top_y) {
                top_y = y[j];
                best_y = j;
            }
            if (t[j] > top_t) {
                top_t = t[j];
                best_t = j;
            }
        }
        return best_y == best_t;
    } else { /* MC_ACC_THRESHOLD */
        int all = 1;
        for (j = 0; j < O; j++)
            all &= (y[j] >= (MC_T)0.5) == (t[j] >= (MC_T)0.5);
        return all;
    }
}

/* The output layer: delta[n,O] = dE/dz for E = the sum over n rows of the
 * per-sample `loss` (see mc_loss) over divisor (the rows of the batch, of which these
 * n may be a part), from the outputs y[n,O] (of activation `output`) and the targets
 * T (row r at T + rows[r]*O, or T + r*O without rows). Returns the sum of the n
 * per-sample losses. */
MC_TARGET static double MC_NAME(output_delta)(MC_T *delta, const MC_T *y, const MC_T *T,
                                    const int64_t *rows, size_t n, size_t divisor,
                                    size_t O, int output, int loss)
{
    const MC_T B = (MC_T)divisor;
    double total = 0;
    size_t r, j;
    for (r = 0; r < n; r++) {
        const MC_T *yr = y + r * O;
        const MC_T *t = T + (rows ? (size_t)rows[r] : r) * O;
        MC_T *d = delta + r * O;
        /* delta first, what the backward pass waits for (over 1 row: no division, which
         * would change nothing) */
        for (j = 0; j < O; j++)
            d[j] = MC_NAME(unit_delta)(yr[j], t[j], output, loss);
        if (divisor != 1)
            for (j = 0; j < O; j++)
                d[j] = d[j] / B;
        total += MC_NAME(row_loss)(yr, t, O, loss);
    }
    return total;
}

/* The number of the B rows of y[B,O] that `accuracy` (see mc_accuracy) counts
 * correct against the targets T (rows as in output_delta). */
MC_TARGET static int64_t MC_NAME(count_correct)(const MC_T *y, const MC_T *T,
                                                const int64_t *rows, size_t B, size_t O,
                                                int accuracy)
{
    int64_t correct = 0;
    size_t r;
    if (accuracy == MC_ACC_NONE)
        return 0;
    for (r = 0; r < B; r++)
        correct += MC_NAME(row_correct)(y + r * O, T + (rows ? (size_t)rows[r] : r) * O, O,
                                        accuracy);
    return correct;
}

/* gb[j] := sum over rows of delta[B,O] for the columns j0 <= j < j1; with fold, the
 * classical step on the bias state instead: gb = momentum*gb - lr*sum. The rows are
 * summed in order, contiguously, into gb, or with fold into sum[O] (scratch, not gb). */
MC_TARGET static void MC_NAME(bias_gradient)(MC_T *restrict gb, const MC_T *restrict delta,
                                             size_t B, size_t O, size_t j0, size_t j1,
                                             int fold, MC_T lr, MC_T momentum,
                                             MC_T *restrict sum)
{
    size_t r, j;
    MC_T *acc = fold ? sum : gb;
    for (j = j0; j < j1; j++)
        acc[j] = delta[j];
    for (r = 1; r < B; r++)
        for (j = j0; j < j1; j++)
            acc[j] += delta[r * O + j];
    if (fold)
        for (j = j0; j < j1; j++)
            gb[j] = momentum * gb[j] - lr * acc[j];
}

/* w[n] += s[n] */
MC_TARGET static void MC_NAME(add)(MC_T *restrict w, const MC_T *restrict s, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        w[i] = w[i] + s[i];
}

/* g[n] += decay * w[n], the l2 term of a weight gradient; returns sum w^2 (the
 * penalty's squares, read in the same sweep) */
MC_TARGET static MC_T MC_NAME(add_decay)(MC_T *restrict g, const MC_T *restrict w, size_t n,
                                         MC_T decay)
{
    MC_T squares = 0;
    size_t i;
#pragma omp simd reduction(+ : squares)
    for (i = 0; i < n; i++) {
        g[i] = g[i] + decay * w[i];
        squares += w[i] * w[i];
    }
    return squares;
}

/* s[n] -= lr_decay * w[n]; w[n] += s[n]: the l2 term of a folded step (s already holds
 * momentum*s - lr*a^T delta) and the weight update, in one sweep; returns sum w^2 of
 * the updated weights (the next batch's penalty) */
MC_TARGET static MC_T MC_NAME(decay_add)(MC_T *restrict w, MC_T *restrict s, size_t n,
                                         MC_T lr_decay)
{
    MC_T squares = 0;
    size_t i;
#pragma omp simd reduction(+ : squares)
    for (i = 0; i < n; i++) {
        const MC_T si = s[i] - lr_decay * w[i];
        const MC_T wi = w[i] + si;
        s[i] = si;
        w[i] = wi;
        squares += wi * wi;
    }
    return squares;
}

/* The update of a block of `rows` rows of `width` weights, each `ld` apart, of W and
 * of its state or gradient G, after the weight-gradient product: with fold, G holds
 * the state momentum*s - lr*a^T delta and the step adds the l2 term and w += s
 * (decay_add, add); without, the l2 term of the gradient (add_decay). Returns the
 * squares those sweeps sum (0 without l2), in MC_T over runs of at most
 * MC_SQUARES_RUN weights and in double over the runs: a float sum over a whole layer
 * would lose digits to its length (and differ more with how a team splits it). */
#define MC_SQUARES_RUN 4096
MC_TARGET static double MC_NAME(block_update)(MC_T *W, MC_T *G, size_t rows, size_t width,
                                              size_t ld, int fold, int penalised, MC_T lr,
                                              MC_T decay)
{
    double squares = 0;
    size_t k, c, n;
    if (width == ld) { /* one contiguous sweep */
        width *= rows;
        rows = width ? 1 : 0;
    }
    for (k = 0; k < rows; k++) {
        MC_T *w = W + k * ld, *g = G + k * ld;
        if (fold && !penalised) {
            MC_NAME(add)(w, g, width);
            continue;
        }
        for (c = 0; c < width && penalised; c += n) {
            n = width - c < MC_SQUARES_RUN ? width - c : MC_SQUARES_RUN;
            if (fold)
                squares += (double)MC_NAME(decay_add)(w + c, g + c, n, lr * decay);
            else
                squares += (double)MC_NAME(add_decay)(g + c, w + c, n, decay);
        }
    }
    return squares;
}

/* sum_i ||W_i||^2 over the weight blocks of the flat buffer p (not the biases). */
MC_TARGET static double MC_NAME(weight_squares)(const mc_mlp *net)
{
    const MC_T *p = (const MC_T *)net->params;
    double total = 0;
    int i;
    for (i = 0; i < net->n_layers; i++) {
        const size_t n = (size_t)net->sizes[i] * (size_t)net->sizes[i + 1];
        MC_T acc = 0;
        size_t k;
#pragma omp simd reduction(+ : acc)
        for (k = 0; k < n; k++)
            acc += p[k] * p[k];
        total += (double)acc;
        p += n + (size_t)net->sizes[i + 1];
    }
    return total;
}

/* Forward pass of all layers for the rows [lo, hi) of x[B, sizes[0]] into the same
 * rows of net->acts[1..L]; with ahead (B = 1), acts[1] already holds the first
 * layer's outputs (see backward) and the pass starts at the second layer. */
MC_TARGET static void MC_NAME(forward_rows)(const mc_mlp *net, const MC_T *x, size_t lo,
                                            size_t hi, int ahead)
{
    const MC_T *p = (const MC_T *)net->params;
    const MC_T *in = x + lo * (size_t)net->sizes[0];
    int i;
    if (hi <= lo)
        return;
    for (i = 0; i < net->n_layers; i++) {
        const size_t I = (size_t)net->sizes[i], O = (size_t)net->sizes[i + 1];
        MC_T *out = (MC_T *)net->acts[i + 1] + lo * O;
        const int act = i == net->n_layers - 1 ? net->output : net->hidden;
        if (i > 0 || !ahead)
            MC_NAME(dense_forward)(out, in, p, p + I * O, hi - lo, I, O, act);
        p += I * O + O;
        in = out;
    }
}

/* Thread t's part of the forward pass of the B rows of x[B, sizes[0]] into
 * net->acts[1..L] on a team of nt > 1 threads (every layer's product on gemm; all of
 * them call it alike). Each layer's product goes by batch rows mc_part(B, t, nt) (a
 * gemm of the thread's rows with the whole of W), or, when mc_team_forward_cols, by
 * columns mc_weight_part(O) (a gemm of every row with the thread's column block of W,
 * so that no two threads pack the same weights); then the bias and activation of the
 * same part, except that a column-split output layer (softmax needs whole rows) adds
 * them by rows after a barrier. A barrier between two layers unless both go by rows
 * (each thread then reads only rows it wrote itself). On return, each thread's rows
 * of the output (the caller's mc_part(B, t, nt)) are complete. */
MC_TARGET static void MC_NAME(forward_part)(const mc_mlp *net, const MC_T *x, size_t B, int t,
                                            int nt)
{
    const MC_T *p = (const MC_T *)net->params;
    const MC_T *in = x;
    const int L = net->n_layers;
    int i, prev_cols = 0; /* the layer before was split by columns */
    size_t lo, hi, r;
    mc_part(B, t, nt, &lo, &hi);
    for (i = 0; i < L; i++) {
        const size_t I = (size_t)net->sizes[i], O = (size_t)net->sizes[i + 1];
        const int act = i == L - 1 ? net->output : net->hidden;
        const int cols = mc_team_forward_cols(B, O);
        const MC_T *b = p + I * O;
        MC_T *out = (MC_T *)net->acts[i + 1];
        if (i > 0 && (cols || prev_cols)) { /* every part of the layer before formed */
            MC_BARRIER();
        }
        if (cols) {
            size_t j0, j1;
            mc_weight_part(O, sizeof(MC_T), t, nt, &j0, &j1);
            if (j1 > j0)
                MC_NAME(gemm_rm)(0, 0, B, j1 - j0, I, 1, in, I, p + j0, O, 0, out + j0, O);
            if (i == L - 1) {
                MC_BARRIER();
                for (r = lo; r < hi; r++)
                    MC_NAME(bias_activate_row)(out + r * O, b, O, act);
            } else if (j1 > j0) {
                for (r = 0; r < B; r++)
                    MC_NAME(bias_activate_row)(out + r * O + j0, b + j0, j1 - j0, act);
            }
        } else if (hi > lo) {
            MC_NAME(dense_forward)(out + lo * O, in + lo * I, p, b, hi - lo, I, O, act);
        }
        prev_cols = cols;
        p += I * O + O;
        in = out;
    }
}

/* Forward pass of all layers for B rows of x[B, sizes[0]] into net->acts[1..L]. */
MC_TARGET static void MC_NAME(forward)(const mc_mlp *net, const MC_T *x, size_t B, int ahead)
{
    MC_NAME(forward_rows)(net, x, 0, B, ahead);
}

/* Whether online_forward takes a batch of 1 row: its output layer runs on loops and is
 * no wider than a vector. */
MC_TARGET static int MC_NAME(online_output)(const mc_mlp *net)
{
    const size_t I = (size_t)net->sizes[net->n_layers - 1];
    const size_t O = (size_t)net->sizes[net->n_layers];
    return O <= MC_LANES(MC_T) && !MC_NAME(use_gemm)(1, I, O);
}

/* The forward pass of one row x (B = 1) and its output layer's delta, loss and count
 * in one (online_output must hold): the layers below the output as forward_rows runs
 * them (with ahead, acts[1] already holds the first layer's outputs); the output
 * layer's sum, bias and f in registers, as dense_forward takes a row no wider than a
 * vector, and its delta from them (unit_delta, no division for the one row); the
 * outputs stored to acts[L] for the loss (row_loss) and the count (row_correct) against
 * the target row t. Returns the loss and adds the count to *correct, as output_delta and
 * count_correct would. */
MC_TARGET MC_NO_UNROLL_AND_JAM static double MC_NAME(online_forward)(const mc_mlp *net,
                                                                     const MC_T *x,
                                                                     int ahead,
                                                                     const MC_T *t,
                                                                     int64_t *correct)
{
    enum { L = MC_LANES(MC_T) };
    const int n = net->n_layers;
    const MC_T *p = (const MC_T *)net->params, *in = x;
    const size_t I = (size_t)net->sizes[n - 1], O = (size_t)net->sizes[n];
    MC_T *y = (MC_T *)net->acts[n], *delta = (MC_T *)net->delta;
    MC_T acc[L], ys[L], d[L];
    size_t j;
    int i;
    for (i = 0; i < n - 1; i++) {
        const size_t Ii = (size_t)net->sizes[i], Oi = (size_t)net->sizes[i + 1];
        MC_T *out = (MC_T *)net->acts[i + 1];
        if (i > 0 || !ahead)
            MC_NAME(dense_forward)(out, in, p, p + Ii * Oi, 1, Ii, Oi, net->hidden);
        p += Ii * Oi + Oi;
        in = out;
    }
    if (n == 1 && ahead) { /* the outputs are in y already */
        _Pragma("omp simd")
        for (j = 0; j < L; j++)
            acc[j] = j < O ? y[j] : (MC_T)0;
    } else {
#define MC_ONLINE_OUTPUT(ACT) MC_NARROW_ROW(acc, in, p, p + I * O, I, O, ACT)
        MC_BY_ACTIVATION(net->output, MC_ONLINE_OUTPUT)
#undef MC_ONLINE_OUTPUT
    }
    _Pragma("omp simd")
    for (j = 0; j < L; j++) { /* acc read once, in every lane */
        const MC_T yj = acc[j], tj = j < O ? t[j] : (MC_T)0;
        ys[j] = yj;
        d[j] = MC_NAME(unit_delta)(yj, tj, net->output, net->loss);
    }
    MC_STORE_LANES(delta, d, O);
    MC_STORE_LANES(y, ys, O);
    if (net->accuracy != MC_ACC_NONE)
        *correct += MC_NAME(row_correct)(ys, t, O, net->accuracy);
    return MC_NAME(row_loss)(ys, t, O, net->loss);
}

#ifndef MC_FOLD_NESTEROV
/* backward's fold for the Nesterov step (1 is the classical one): online batches
 * whose layers all run as loops only */
#define MC_FOLD_NESTEROV 2
#endif

/* ---- online (B = 1) layers on loops: see online_layer ---------------------------- */

/* Element j of row k (w, g): BODY sets gn (the element's new state or gradient) and,
 * with STEP, wn (its weight after the step) from wj (its weight before the step), gj
 * (its state or gradient) and cd (its gradient a_k delta_j); STEP whether the
 * weights change. */
#define MC_ONLINE_ELEMENT(STEP, BODY)                                                    \
    const MC_T gj = g[j];                                                                \
    MC_T gn, wn = wj;                                                                    \
    (void)gj; /* read by the steps only */                                               \
    BODY                                                                                 \
    g[j] = gn;                                                                           \
    if (STEP)                                                                            \
        w[j] = wn;
/* SWEEPS(STEP, SQ, BODY) for the rule that fold and penalised name: STEP whether the
 * weights change, SQ whether to sum the squares of the weights after the step (before
 * it without STEP) */
#define MC_ONLINE_RULES(SWEEPS)                                                          \
    if (fold == MC_FOLD_NESTEROV && penalised) {                                         \
        SWEEPS(1, 1, {                                                                   \
            const MC_T gr = cd + decay * wj;                                             \
            gn = momentum * gj - lr * gr;                                                \
            wn = (wj + momentum * gn) - lr * gr;                                         \
        })                                                                               \
    } else if (fold == MC_FOLD_NESTEROV) {                                               \
        SWEEPS(1, 0, {                                                                   \
            gn = momentum * gj - lr * cd;                                                \
            wn = (wj + momentum * gn) - lr * cd;                                         \
        })                                                                               \
    } else if (fold && penalised) {                                                      \
        SWEEPS(1, 1, {                                                                   \
            gn = momentum * gj - lr * (cd + decay * wj);                                 \
            wn = wj + gn;                                                                \
        })                                                                               \
    } else if (fold) {                                                                   \
        SWEEPS(1, 0, {                                                                   \
            gn = momentum * gj - lr * cd;                                                \
            wn = wj + gn;                                                                \
        })                                                                               \
    } else if (penalised) {                                                              \
        SWEEPS(0, 1, { gn = cd + decay * wj; })                                          \
    } else {                                                                             \
        SWEEPS(0, 0, { gn = cd; })                                                       \
    }

/* BIASES(STEP, BODY) for the biases' step or gradient by the rule fold names: BODY as
 * the weights' with cd = delta_j (no l2 term on the biases) */
#define MC_ONLINE_BIAS_RULES(BIASES)                                                     \
    if (fold == MC_FOLD_NESTEROV) {                                                      \
        BIASES(1, {                                                                      \
            gn = momentum * gj - lr * cd;                                                \
            wn = (wj + momentum * gn) - lr * cd;                                         \
        })                                                                               \
    } else if (fold) {                                                                   \
        BIASES(1, {                                                                      \
            gn = momentum * gj - lr * cd;                                                \
            wn = wj + gn;                                                                \
        })                                                                               \
    } else {                                                                             \
        BIASES(0, { gn = cd; })                                                          \
    }

/* An online layer wider than a vector (O > MC_LANES), row by row (see online_layer);
 * returns the squares. */
MC_TARGET static MC_T MC_NAME(online_wide)(MC_T *restrict W, MC_T *restrict G,
                                           MC_T *restrict below, const MC_T *restrict a,
                                           int act, const MC_T *restrict delta, size_t I,
                                           size_t O, int fold, int penalised, MC_T lr,
                                           MC_T momentum, MC_T decay,
                                           const MC_T *restrict next_x,
                                           MC_T *restrict next_z, int out_act)
{
    MC_T *restrict b = W + I * O, *restrict gb = G + I * O;
    MC_T squares = 0;
    size_t k, j;
    if (next_x != NULL)
        for (j = 0; j < O; j++)
            next_z[j] = 0;
/* DOT (0 or 1) whether to sum below[k], NEXT whether to add to next_z */
#define MC_ONLINE_WIDE(DOT, NEXT, STEP, SQ, BODY)                                        \
    for (k = 0; k < I; k++) {                                                            \
        const MC_T c = a[k], xn = NEXT ? next_x[k] : (MC_T)0;                            \
        MC_T *restrict w = W + k * O, *restrict g = G + k * O;                           \
        MC_T acc = 0, row_squares = 0;                                                   \
        _Pragma("omp simd reduction(+ : acc, row_squares)")                              \
        for (j = 0; j < O; j++) {                                                        \
            const MC_T wj = w[j], dj = delta[j], cd = c * dj;                            \
            MC_ONLINE_ELEMENT(STEP, BODY)                                                \
            if (DOT)                                                                     \
                acc += dj * wj;                                                          \
            if (SQ)                                                                      \
                row_squares += wn * wn;                                                  \
            if (NEXT)                                                                    \
                next_z[j] += xn * wn;                                                    \
        }                                                                                \
        if (DOT)                                                                         \
            below[k] = acc * MC_NAME(derivative)(c, act);                                \
        squares += row_squares;                                                          \
    }
#define MC_ONLINE_WIDE_SWEEPS(STEP, SQ, BODY)                                            \
    if (below != NULL) {                                                                 \
        MC_ONLINE_WIDE(1, 0, STEP, SQ, BODY)                                             \
    } else if (next_x != NULL) {                                                         \
        MC_ONLINE_WIDE(0, 1, STEP, SQ, BODY)                                             \
    } else {                                                                             \
        MC_ONLINE_WIDE(0, 0, STEP, SQ, BODY)                                             \
    }
    MC_ONLINE_RULES(MC_ONLINE_WIDE_SWEEPS)
#undef MC_ONLINE_WIDE_SWEEPS
#undef MC_ONLINE_WIDE
#define MC_ONLINE_WIDE_BIASES(STEP, BODY)                                                \
    for (j = 0; j < O; j++) {                                                            \
        const MC_T wj = b[j], gj = gb[j], cd = delta[j];                                 \
        MC_T gn, wn = wj;                                                                \
        (void)gj;                                                                        \
        BODY                                                                             \
        gb[j] = gn;                                                                      \
        if (STEP)                                                                        \
            b[j] = wn;                                                                   \
    }
    MC_ONLINE_BIAS_RULES(MC_ONLINE_WIDE_BIASES)
#undef MC_ONLINE_WIDE_BIASES
    if (next_x != NULL)
        MC_NAME(bias_activate_row)(next_z, b, O, out_act);
    return squares;
}

/* online_narrow's rows narrower than a vector, in chunks of this many */
#define MC_ONLINE_ROWS 32

/* The weights of an online layer no wider than a vector (O <= MC_LANES), as one
 * vector a row or as flat chunks (see online_layer); returns the squares. */
MC_TARGET MC_NO_UNROLL_AND_JAM static MC_T MC_NAME(online_narrow)(
    MC_T *restrict W, MC_T *restrict G, MC_T *restrict below, const MC_T *restrict a,
    int act, const MC_T *restrict delta, size_t I, size_t O, int fold, int penalised,
    MC_T lr, MC_T momentum, MC_T decay, const MC_T *restrict next_x,
    MC_T *restrict next_z, int out_act)
{
    enum { L = MC_LANES(MC_T) };
    MC_T *restrict b = W + I * O, *restrict gb = G + I * O;
    /* delta (zero past O), the updated biases and their state or gradient, the next
     * product, a row's products with delta (lanes past O: 0 * 0), the squares by lane
     * (rows as wide as a vector); a chunk's a_k delta_j (narrower rows) */
    MC_T dn[L], bn[L], gbn[L], zn[L], products[L], lane_squares[L];
    MC_T outer[MC_ONLINE_ROWS * L]; /* a row's L lanes from each row's start */
    MC_T squares = 0;
    size_t k, j, k0, k1;
    _Pragma("omp simd")
    for (j = 0; j < L; j++) {
        dn[j] = j < O ? delta[j] : (MC_T)0;
        zn[j] = 0;
        lane_squares[j] = 0;
    }
/* the biases, first (they do not depend on the weights), as one vector (0 past O):
 * their state or gradient into gbn, the updated biases into bn */
#define MC_ONLINE_NARROW_BIASES(STEP, BODY)                                              \
    _Pragma("omp simd")                                                                  \
    for (j = 0; j < L; j++) {                                                            \
        const MC_T wj = j < O ? b[j] : (MC_T)0, gj = j < O ? gb[j] : (MC_T)0,            \
                   cd = dn[j];                                                           \
        MC_T gn, wn = wj;                                                                \
        (void)gj;                                                                        \
        BODY                                                                             \
        gbn[j] = gn;                                                                     \
        bn[j] = wn;                                                                      \
    }                                                                                    \
    MC_STORE_LANES(gb, gbn, O);                                                          \
    if (STEP)                                                                            \
        MC_STORE_LANES(b, bn, O);
    MC_ONLINE_BIAS_RULES(MC_ONLINE_NARROW_BIASES)
#undef MC_ONLINE_NARROW_BIASES
/* rows as wide as a vector, DOT (0 or 1) whether to sum below[k]: the next product is
 * summed whether or not there is a next sample (xn = 0 without), so that the first
 * layer's step is the same code in an epoch's sweeps that form the next product and
 * in its last, which a compiler cannot then contract differently */
#define MC_ONLINE_VECTOR(DOT, STEP, SQ, BODY)                                            \
    for (k = 0; k < I; k++) {                                                            \
        const MC_T c = a[k], xn = next_x != NULL ? next_x[k] : (MC_T)0;                  \
        MC_T *restrict w = W + k * L, *restrict g = G + k * L;                           \
        _Pragma("omp simd")                                                              \
        for (j = 0; j < L; j++) {                                                        \
            const MC_T wj = w[j], dj = dn[j], cd = c * dj;                               \
            MC_ONLINE_ELEMENT(STEP, BODY)                                                \
            if (DOT)                                                                     \
                products[j] = dj * wj;                                                   \
            if (SQ)                                                                      \
                lane_squares[j] += wn * wn;                                              \
            if (!DOT)                                                                    \
                zn[j] += xn * wn;                                                        \
        }                                                                                \
        if (DOT)                                                                         \
            below[k] = MC_NAME(lanes_sum)(products) *                                    \
                       MC_NAME(derivative)(c, act);                                      \
    }
/* narrower rows, a chunk of rows [k0, k1) at a time: below and the products
 * a_k delta_j into outer, then the step over the chunk's weights as one flat array */
#define MC_ONLINE_FLAT(DOT, STEP, SQ, BODY)                                              \
    for (k0 = 0; k0 < I; k0 = k1) {                                                      \
        MC_T chunk_squares = 0;                                                          \
        k1 = I - k0 < MC_ONLINE_ROWS ? I : k0 + MC_ONLINE_ROWS;                          \
        for (k = k0; k < k1; k++) {                                                      \
            const MC_T c = a[k], *restrict w = W + k * O;                                \
            MC_T *restrict cds = outer + (k - k0) * O;                                   \
            _Pragma("omp simd")                                                          \
            for (j = 0; j < L; j++) {                                                    \
                if (DOT)                                                                 \
                    products[j] = dn[j] * (j < O ? w[j] : (MC_T)0);                      \
                cds[j] = c * dn[j]; /* past O: the next row's, or slack */            \
            }                                                                            \
            if (DOT)                                                                     \
                below[k] = MC_NAME(lanes_sum)(products) *                                \
                           MC_NAME(derivative)(c, act);                                  \
        }                                                                                \
        {                                                                                \
            MC_T *restrict w = W + k0 * O, *restrict g = G + k0 * O;                     \
            const size_t n = (k1 - k0) * O;                                              \
            _Pragma("omp simd reduction(+ : chunk_squares)")                             \
            for (j = 0; j < n; j++) {                                                    \
                const MC_T wj = w[j], cd = outer[j];                                     \
                MC_ONLINE_ELEMENT(STEP, BODY)                                            \
                if (SQ)                                                                  \
                    chunk_squares += wn * wn;                                            \
            }                                                                            \
        }                                                                                \
        squares += chunk_squares;                                                        \
    }
#define MC_ONLINE_NARROW_SWEEPS(STEP, SQ, BODY)                                          \
    if (O < L && below != NULL) {                                                        \
        MC_ONLINE_FLAT(1, STEP, SQ, BODY)                                                \
    } else if (O < L) {                                                                  \
        MC_ONLINE_FLAT(0, STEP, SQ, BODY)                                                \
    } else if (below != NULL) {                                                          \
        MC_ONLINE_VECTOR(1, STEP, SQ, BODY)                                              \
    } else {                                                                             \
        MC_ONLINE_VECTOR(0, STEP, SQ, BODY)                                              \
    }
    MC_ONLINE_RULES(MC_ONLINE_NARROW_SWEEPS)
#undef MC_ONLINE_NARROW_SWEEPS
#undef MC_ONLINE_FLAT
#undef MC_ONLINE_VECTOR
    if (O == L && penalised)
        squares = MC_NAME(lanes_sum)(lane_squares);
    if (next_x != NULL) {
        if (O < L) /* the next product, from the updated rows */
            for (k = 0; k < I; k++) {
                const MC_T xn = next_x[k], *restrict w = W + k * O;
                _Pragma("omp simd")
                for (j = 0; j < L; j++)
                    zn[j] += xn * (j < O ? w[j] : (MC_T)0);
            }
        /* the updated biases and f, as dense_forward adds and applies them */
        _Pragma("omp simd")
        for (j = 0; j < L; j++)
            zn[j] = zn[j] + bn[j];
#define MC_ONLINE_NEXT(ACT) MC_NAME(activate_lanes)(zn, O, ACT)
        MC_BY_ACTIVATION(out_act, MC_ONLINE_NEXT)
#undef MC_ONLINE_NEXT
        MC_STORE_LANES(next_z, zn, O);
    }
    return squares;
}
#undef MC_ONLINE_ROWS

/* One layer of an online (B = 1) backward pass on loops, from the layer's delta[O] and
 * inputs a[I]: one sweep over each row k of W and of its state or gradient G computes
 * below[k] = f'(a_k) sum_j delta_j W[k,j] with the weights before the step (when below
 * is not NULL; f' that of the activation act, written in terms of a) and the row's
 * gradient a_k delta_j (+ decay W[k,j]) in
 * registers, which is, by fold (see backward), stored into G, or the classical or the
 * Nesterov step of the row. The biases' gradient (delta) or step likewise, in place.
 * With penalised, returns sum W^2 over the weights after the step with fold, before
 * it without; 0 otherwise. With next_x (fold only), the same sweep also forms the next
 * sample's outputs of the layer with its updated weights and biases,
 * next_z[O] = f(next_x[I] W + b) for f the activation out_act, summed over k in order
 * and activated as dense_forward does. Both loops write the sum as acc += x * w, which
 * the compiler fuses alike on every SIMD path (one rounding with FMA, two without),
 * so that an epoch's steps are bit for bit those of its samples stepped one call at a
 * time (tests/test_online.py checks it on every path): a change to either loop must
 * keep the two rounding alike.
 *
 * By the width of the rows against the lanes of a vector (MC_LANES):
 * - wider (online_wide): the sweep above, row by row;
 * - as wide (online_narrow): each row is one vector, delta and the next product stay
 *   in registers (the biases and f too, as in dense_forward);
 * - narrower (online_narrow): a row would be a masked vector whose loads reach into
 *   the rows after it, which the stores of the row before have just written (a load
 *   takes a value from a store still in flight only when the store covers it, so each
 *   row would wait for the one before it to reach the cache). Instead, for a chunk of
 *   rows at a time, one pass forms below (reading the weights only) and the products
 *   a_k delta_j, which the step then takes over the chunk's weights as one flat array
 *   of whole vectors; the next product is summed after the step, from the updated
 *   rows.
 * Every element's step is the same arithmetic on all three. */
MC_TARGET static MC_T MC_NAME(online_layer)(MC_T *restrict W, MC_T *restrict G,
                                            MC_T *restrict below, const MC_T *restrict a,
                                            int act, const MC_T *restrict delta, size_t I,
                                            size_t O, int fold, int penalised, MC_T lr,
                                            MC_T momentum, MC_T decay,
                                            const MC_T *restrict next_x,
                                            MC_T *restrict next_z, int out_act)
{
    return (O <= MC_LANES(MC_T) ? MC_NAME(online_narrow) : MC_NAME(online_wide))(
        W, G, below, a, act, delta, I, O, fold, penalised, lr, momentum, decay, next_x,
        next_z, out_act);
}
#undef MC_ONLINE_BIAS_RULES
#undef MC_ONLINE_RULES
#undef MC_ONLINE_ELEMENT

/* Backward pass from net->delta (the output delta of B rows), with x the input
 * rows; dE/dW includes the l2 term (net->l2/B) W. Without fold: dE/dparams into
 * net->grad. With fold: the classical step state = momentum*state - lr*dE/dparams,
 * w += state, layer by layer, each layer's weights changed only after the delta
 * below it (and its own l2 term) has been computed; with fold = MC_FOLD_NESTEROV
 * (B = 1, no layer on gemm) the Nesterov step of mc_momentum_step instead,
 * w = (w + momentum*state) - lr*dE/dparams. With net->l2 != 0, returns
 * sum_i ||W_i||^2 read in the same sweeps as the l2 term: of the weights before the
 * step without fold, after it with fold; 0 otherwise. With next (B = 1, fold, the
 * first layer on loops), the next sample's input row: the first layer's sweep also
 * leaves its outputs with the updated weights and biases, f(next W_0 + b_0), in
 * acts[1] (no longer read by then), for forward with ahead.
 *
 * With nt > 1 (every layer on gemm; inside an OpenMP parallel region of nt threads,
 * all of which call it alike), this is thread t's part. The weight gradient (or step),
 * the l2 term and w += state take the weight rows k0:k1 = mc_weight_part(I) of each
 * layer, or, when mc_team_gradient_cols, its columns j0:j1 = mc_weight_part(O); the
 * biases the columns j0:j1. The delta of the layer below and its derivative take the
 * batch rows mc_part(B, t, nt) (a gemm of the thread's rows of delta with the whole
 * of W), or, when mc_team_below_cols, the columns k0:k1 of below, delta W[k0:k1,:]^T
 * (a gemm with the thread's weight rows only). A barrier between that product and
 * the step, which keeps a layer's weights unchanged until every thread has read them,
 * unless both take the same weight rows k0:k1 (each thread then steps only rows it
 * alone read); a barrier after each layer but the first, before the layer below reads
 * its delta and before the old delta, read by every thread, is written again as
 * below. The squares returned are then those of the part. */
MC_TARGET static double MC_NAME(backward_part)(const mc_mlp *net, const MC_T *x, size_t B,
                                               int fold, MC_T lr, MC_T momentum,
                                               const MC_T *next, int t, int nt)
{
    MC_T *delta = (MC_T *)net->delta, *below = (MC_T *)net->delta_prev;
    size_t offset = net->n_params; /* walked down layer by layer */
    const int penalised = net->l2 != 0;
    const MC_T decay = (MC_T)(net->l2 / (double)B);
    double squares = 0;
    size_t lo, hi;
    int i;
    mc_part(B, t, nt, &lo, &hi);
    for (i = net->n_layers - 1; i >= 0; i--) {
        const size_t I = (size_t)net->sizes[i], O = (size_t)net->sizes[i + 1];
        const MC_T *a = i == 0 ? x : (const MC_T *)net->acts[i];
        MC_T *W = (MC_T *)net->params + (offset -= I * O + O);
        MC_T *gW = (MC_T *)(fold ? net->state : net->grad) + offset;
        MC_T *gb = gW + I * O;
        MC_T *row = (MC_T *)net->scratch;
        const MC_T alpha = fold ? -lr : (MC_T)1, beta = fold ? momentum : (MC_T)0;
        double layer_squares = 0;
        size_t r, k, j, k0, k1, j0, j1;
        const int below_cols = nt > 1 && mc_team_below_cols(B, I);
        const int gw_cols = nt > 1 && mc_team_gradient_cols(I, O);
        mc_weight_part(I, sizeof(MC_T), t, nt, &k0, &k1);
        mc_weight_part(O, sizeof(MC_T), t, nt, &j0, &j1);

        if (B == 1 && !MC_NAME(use_gemm)(1, I, O)) {
            /* online: below, the weights and the biases in one sweep of the layer */
            const int ahead = i == 0 && next != NULL;
            layer_squares = MC_NAME(online_layer)(
                W, gW, i > 0 ? below : NULL, a, net->hidden, delta, I, O, fold, penalised,
                lr, momentum, decay, ahead ? next : NULL, ahead ? (MC_T *)net->acts[1] : NULL,
                net->n_layers > 1 ? net->hidden : net->output);
            squares += (double)layer_squares;
            MC_T *swap = delta;
            delta = below;
            below = swap;
            continue;
        }

        if (i > 0 && below_cols) { /* below[:, k0:k1] = delta W[k0:k1, :]^T * f'(a) */
            if (k1 > k0) {
                MC_NAME(gemm_rm)(0, 1, B, k1 - k0, O, 1, delta, O, W + k0 * O, O, 0,
                                 below + k0, I);
                for (r = 0; r < B; r++)
                    MC_NAME(times_derivative)(below + r * I + k0, a + r * I + k0, k1 - k0,
                                              net->hidden);
            }
        } else if (i > 0 && hi > lo) { /* below[lo:hi, :] = delta[lo:hi, :] W^T * f'(a) */
            if (MC_NAME(use_gemm)(B, I, O)) {
                MC_NAME(gemm_rm)(0, 1, hi - lo, I, O, 1, delta + lo * O, O, W, O, 0,
                                 below + lo * I, I);
            } else {
                for (r = lo; r < hi; r++)
                    for (k = 0; k < I; k++) {
                        const MC_T *restrict d = delta + r * O, *restrict w = W + k * O;
                        MC_T acc = 0;
                        /* a reduction the vectoriser may reorder: without it the sum
                         * is one long chain of dependent adds */
#pragma omp simd reduction(+ : acc)
                        for (j = 0; j < O; j++)
                            acc += d[j] * w[j];
                        below[r * I + k] = acc;
                    }
            }
            MC_NAME(times_derivative)(below + lo * I, a + lo * I, (hi - lo) * I, net->hidden);
        }
        if (nt > 1 && i > 0 && (!below_cols || gw_cols)) { /* W read by every thread */
            MC_BARRIER();
        }

        if (MC_NAME(use_gemm)(B, I, O)) {
            /* gW[I,O] := alpha a^T[I,B] delta[B,O] + beta gW: with fold, gW is the
             * state and the gemm itself is the step state = m*state - lr*grad */
            if (gw_cols) {
                if (j1 > j0)
                    MC_NAME(gemm_rm)(1, 0, I, j1 - j0, B, alpha, a, I, delta + j0, O, beta,
                                     gW + j0, O);
                layer_squares = MC_NAME(block_update)(W + j0, gW + j0, I, j1 - j0, O, fold,
                                                      penalised, lr, decay);
            } else {
                if (k1 > k0)
                    MC_NAME(gemm_rm)(1, 0, k1 - k0, O, B, alpha, a + k0, I, delta, O, beta,
                                     gW + k0 * O, O);
                layer_squares = MC_NAME(block_update)(W + k0 * O, gW + k0 * O, k1 - k0, O, O,
                                                      fold, penalised, lr, decay);
            }
            MC_NAME(bias_gradient)(gb, delta, B, O, j0, j1, fold, lr, momentum, row);
            if (fold)
                MC_NAME(add)(W + I * O + j0, gb + j0, j1 - j0);
        } else {
            /* one pass per weight row: the row's gradient, then (fold) its step
             * (nt = 1 only: row is one scratch row) */
            for (k = 0; k < I; k++) {
                MC_T *restrict g = fold ? row : gW + k * O;
                for (j = 0; j < O; j++)
                    g[j] = 0;
                for (r = 0; r < B; r++) {
                    const MC_T c = a[r * I + k];
                    const MC_T *restrict d = delta + r * O;
                    for (j = 0; j < O; j++)
                        g[j] += c * d[j];
                }
                if (fold) {
                    MC_T *restrict s = gW + k * O, *restrict w = W + k * O;
                    MC_T row_squares = 0;
                    if (penalised) {
                        MC_NAME(add_decay)(g, w, O, decay);
#pragma omp simd reduction(+ : row_squares)
                        for (j = 0; j < O; j++) {
                            const MC_T sj = momentum * s[j] - lr * g[j];
                            const MC_T wj = w[j] + sj;
                            s[j] = sj;
                            w[j] = wj;
                            row_squares += wj * wj;
                        }
                        layer_squares += row_squares;
                    } else {
                        for (j = 0; j < O; j++) {
                            const MC_T sj = momentum * s[j] - lr * g[j];
                            s[j] = sj;
                            w[j] = w[j] + sj;
                        }
                    }
                } else if (penalised) {
                    layer_squares += MC_NAME(add_decay)(g, W + k * O, O, decay);
                }
            }
            MC_NAME(bias_gradient)(gb, delta, B, O, 0, O, fold, lr, momentum, row);
            if (fold)
                MC_NAME(add)(W + I * O, gb, O);
        }
        squares += (double)layer_squares;
        {
            MC_T *swap = delta;
            delta = below;
            below = swap;
        }
        if (nt > 1 && i > 0) { /* below formed; the old delta, next written as below,
                                * read by all */
            MC_BARRIER();
        }
    }
    return squares;
}

/* The whole backward pass on the calling thread (see backward_part). */
MC_TARGET static double MC_NAME(backward)(const mc_mlp *net, const MC_T *x, size_t B, int fold,
                                          MC_T lr, MC_T momentum, const MC_T *next)
{
    return MC_NAME(backward_part)(net, x, B, fold, lr, momentum, next, 0, 1);
}

/* Outputs of X[n, sizes[0]] into Y, max_batch rows at a time; on a team of threads
 * (BLAS held to one thread) when a chunk qualifies as a training batch does
 * (mc_mlp_team_threads; its products split as a training step's, forward_part; a small
 * last chunk by rows), so that predictions between training
 * epochs run on the same threads as the epochs rather than against them. */
MC_TARGET static void MC_NAME(predict)(const mc_mlp *net, const MC_T *X, size_t n, MC_T *Y)
{
    const size_t I = (size_t)net->sizes[0], O = (size_t)net->sizes[net->n_layers];
    const int want = mc_mlp_team_threads(net, n < net->max_batch ? n : net->max_batch);
    if (want > 1)
        mc_team_enter();
#ifdef _OPENMP
#pragma omp parallel num_threads(want) if (want > 1)
#endif
    {
        const int t = mc_thread_num(), nt = mc_team_size();
        size_t start;
        for (start = 0; start < n; start += net->max_batch) {
            const size_t B = n - start < net->max_batch ? n - start : net->max_batch;
            size_t lo, hi;
            mc_part(B, t, nt, &lo, &hi);
            if (nt > 1 && mc_mlp_team_batch(net, B))
                MC_NAME(forward_part)(net, X + start * I, B, t, nt);
            else
                MC_NAME(forward_rows)(net, X + start * I, lo, hi, 0);
            memcpy(Y + (start + lo) * O, (MC_T *)net->acts[net->n_layers] + lo * O,
                   (hi - lo) * O * sizeof(MC_T));
            if (nt > 1) { /* the workspace rows are the next chunk's, parted anew */
                MC_BARRIER();
            }
        }
    }
    if (want > 1)
        mc_team_leave();
}

MC_TARGET static double MC_NAME(gradients)(const mc_mlp *net, const MC_T *X, const MC_T *T,
                                           size_t n, int64_t *n_correct)
{
    const size_t O = (size_t)net->sizes[net->n_layers];
    const MC_T *y = (const MC_T *)net->acts[net->n_layers];
    double total;
    MC_NAME(forward)(net, X, n, 0);
    total = MC_NAME(output_delta)((MC_T *)net->delta, y, T, NULL, n, n, O, net->output,
                                  net->loss);
    *n_correct += MC_NAME(count_correct)(y, T, NULL, n, O, net->accuracy);
    /* without fold the squares are of the weights of this pass */
    total += 0.5 * net->l2 * MC_NAME(backward)(net, X, n, 0, 0, 0, NULL);
    return total / (double)n;
}

/* One process's share of a global batch of `divisor` rows (data-parallel training):
 * grad := (1/divisor) sum over its n rows (rows[0:n] of X and T; n may be 0) of the
 * per-sample loss's dloss/dparams, plus (l2/divisor) W_i on the weight blocks; the
 * processes add their shares and every one takes the same step. l2 is given to one
 * process only (0 on the others); net->l2 is not used. Returns the sum of the n
 * per-sample losses, adds the rows net->accuracy counts correct to *n_correct and
 * sets *squares to sum_i ||W_i||^2 (0 when l2 is 0). */
MC_TARGET static double MC_NAME(gradient_share)(const mc_mlp *net, const MC_T *X, const MC_T *T,
                                                const int64_t *rows, size_t n, size_t divisor,
                                                double l2, int64_t *n_correct, double *squares)
{
    const size_t I = (size_t)net->sizes[0], O = (size_t)net->sizes[net->n_layers];
    const MC_T *y = (const MC_T *)net->acts[net->n_layers];
    MC_T *x = (MC_T *)net->acts[0], *delta = (MC_T *)net->delta;
    MC_T *g = (MC_T *)net->grad;
    const MC_T *p = (const MC_T *)net->params;
    mc_mlp plain = *net;
    double total = 0;
    size_t r;
    int i;
    plain.l2 = 0;
    *squares = 0;
    if (n) {
        for (r = 0; r < n; r++)
            memcpy(x + r * I, X + (size_t)rows[r] * I, I * sizeof(MC_T));
        MC_NAME(forward)(&plain, x, n, 0);
        total = MC_NAME(output_delta)(delta, y, T, rows, n, n, O, net->output, net->loss);
        *n_correct += MC_NAME(count_correct)(y, T, rows, n, O, net->accuracy);
        if (n != divisor) { /* delta = dloss/dz / n, to / divisor */
            const MC_T scale = (MC_T)n / (MC_T)divisor;
            for (r = 0; r < n * O; r++)
                delta[r] *= scale;
        }
        MC_NAME(backward)(&plain, x, n, 0, 0, 0, NULL);
    } else {
        memset(g, 0, net->n_params * sizeof(MC_T));
    }
    if (l2 != 0) {
        const MC_T decay = (MC_T)(l2 / (double)divisor);
        for (i = 0; i < net->n_layers; i++) {
            const size_t weights = (size_t)net->sizes[i] * (size_t)net->sizes[i + 1];
            *squares += (double)MC_NAME(add_decay)(g, p, weights, decay);
            g += weights + (size_t)net->sizes[i + 1];
            p += weights + (size_t)net->sizes[i + 1];
        }
    }
    return total;
}

/* backward_part for B = 1 with every layer on loops: online_layer layer by layer. */
MC_TARGET static double MC_NAME(online_backward)(const mc_mlp *net, const MC_T *x, int fold,
                                                 MC_T lr, MC_T momentum, const MC_T *next)
{
    MC_T *delta = (MC_T *)net->delta, *below = (MC_T *)net->delta_prev, *swap;
    MC_T *W = (MC_T *)net->params + net->n_params;
    MC_T *G = (MC_T *)(fold ? net->state : net->grad) + net->n_params;
    const int penalised = net->l2 != 0;
    const MC_T decay = (MC_T)net->l2;
    double squares = 0;
    int i;
    for (i = net->n_layers - 1; i >= 0; i--) {
        const size_t I = (size_t)net->sizes[i], O = (size_t)net->sizes[i + 1];
        const int ahead = i == 0 && next != NULL;
        W -= I * O + O;
        G -= I * O + O;
        squares += (double)MC_NAME(online_layer)(
            W, G, i > 0 ? below : NULL, i > 0 ? (const MC_T *)net->acts[i] : x, net->hidden,
            delta, I, O, fold, penalised, lr, momentum, decay, ahead ? next : NULL,
            ahead ? (MC_T *)net->acts[1] : NULL, net->n_layers > 1 ? net->hidden : net->output);
        swap = delta;
        delta = below;
        below = swap;
    }
    return squares;
}

/* train_epoch for batches of one row (online learning), on the calling thread: the
 * same passes, checks and accounting as its loop over batches takes for B = 1 on one
 * thread, without what a team or a batch of several rows needs (the parts, the
 * barriers, the gathering of rows), and with the output layer's forward pass, delta,
 * loss and count in one where online_output holds. */
MC_TARGET static mc_fit_result MC_NAME(online_epoch)(const mc_mlp *net, const MC_T *X,
                                                     const MC_T *T, const int64_t *order,
                                                     size_t n_order, const mc_hyper *hyper,
                                                     int fold)
{
    const size_t I = (size_t)net->sizes[0], O = (size_t)net->sizes[net->n_layers];
    MC_T *y = (MC_T *)net->acts[net->n_layers], *delta = (MC_T *)net->delta;
    const int fused = MC_NAME(online_output)(net);
    int all_loops = 1, i;
    const MC_T lr = (MC_T)hyper->lr, momentum = (MC_T)hyper->momentum;
    mc_fit_result res = {0};
    mc_buffer all = mc_net_buffer(net);
    size_t work = 0, s;
    int ahead = 0; /* acts[1] holds this sample's first-layer outputs */
    for (i = 0; i < net->n_layers; i++)
        if (MC_NAME(use_gemm)(1, (size_t)net->sizes[i], (size_t)net->sizes[i + 1]))
            all_loops = 0;
    /* Nesterov steps fold into the backward pass's loops too (not into gemm, whose
     * beta gives the classical step only): no gradient buffer pass, no step. */
    if (!fold && all_loops && hyper->rule == MC_NESTEROV && hyper->weight_decay == 0)
        fold = MC_FOLD_NESTEROV;
    /* Folded steps whose first layer runs as loops: each step's sweep of that layer
     * also forms the next sample's outputs of it (see backward), so that the next
     * forward pass does not read those weights again. */
    const int look_ahead = fold && !MC_NAME(use_gemm)(1, I, (size_t)net->sizes[1]);
    /* with fold and l2: sum ||W||^2 at the weights of the next forward pass, which each
     * step's sweep sums */
    double squares = net->l2 != 0 && fold ? MC_NAME(weight_squares)(net) : 0;
    for (s = 0; s < n_order; s++) {
        const MC_T *in = X + (size_t)order[s] * I, *t = T + (size_t)order[s] * O;
        const MC_T *next;
        double loss, penalty = 0;
        if (net->check_rows && !mc_all_finite(in, I, MC_DTYPE)) {
            res.bad_input = 1;
            break;
        }
        if (fused) {
            loss = MC_NAME(online_forward)(net, in, ahead, t, &res.n_correct);
        } else {
            MC_NAME(forward_rows)(net, in, 0, 1, ahead);
            loss = MC_NAME(output_delta)(delta, y, T, order + s, 1, 1, O, net->output,
                                         net->loss);
            res.n_correct += MC_NAME(count_correct)(y, T, order + s, 1, O, net->accuracy);
        }
        if (net->l2 != 0 && fold)
            penalty = 0.5 * net->l2 * squares;
        if (!isfinite(loss + penalty)) {
            res.stopped = 1;
            break;
        }
        next = look_ahead && s + 1 < n_order ? X + (size_t)order[s + 1] * I : NULL;
        squares = all_loops ? MC_NAME(online_backward)(net, in, fold, lr, momentum, next)
                            : MC_NAME(backward)(net, in, 1, fold, lr, momentum, next);
        ahead = next != NULL;
        if (net->l2 != 0 && !fold) {
            penalty = 0.5 * net->l2 * squares;
            if (!isfinite(penalty)) {
                res.stopped = 1;
                break;
            }
        }
        if (!fold)
            mc_momentum_step_threads(&all, 1, hyper, 0, 1);
        res.sum_loss += loss + penalty;
        res.sum_penalty += penalty;
        res.n_steps++;
        work += net->n_params;
        if (net->check != NULL && work >= net->check_work) {
            work = 0;
            if (net->check(net->check_ctx)) {
                res.interrupted = 1;
                break;
            }
        }
    }
    return res;
}

/* mc_mlp_train_epoch for this dtype and SIMD path. */
MC_TARGET static mc_fit_result MC_NAME(train_epoch)(const mc_mlp *net, const MC_T *X, const MC_T *T,
                                          const int64_t *order, size_t n_order, size_t batch,
                                          const mc_hyper *hyper, int fold)
{
    const size_t I = (size_t)net->sizes[0], O = (size_t)net->sizes[net->n_layers];
    MC_T *x = (MC_T *)net->acts[0];
    MC_T *y = (MC_T *)net->acts[net->n_layers];
    MC_T *delta = (MC_T *)net->delta;
    mc_fit_result res = {0};
    if (batch == 1) /* online: never a team (see mc_mlp_team_threads) */
        return MC_NAME(online_epoch)(net, X, T, order, n_order, hyper, fold);
    /* A team of threads when full batches run on one (mc_mlp_team_threads) and gemm
     * can be held to the calling thread (mc_team_enter): each thread takes its share of
     * every pass, gemm included, so that no BLAS pool spins while the passes between
     * the products run on one core. A batch that is too small (the last) runs on
     * thread 0 alone. */
    const int want = mc_mlp_team_threads(net, n_order < batch ? n_order : batch);
    /* per-thread parts, summed in thread order */
    double part_loss[MC_TEAM_MAX], part_squares[MC_TEAM_MAX];
    int64_t part_correct[MC_TEAM_MAX];
    int part_finite[MC_TEAM_MAX];
    int interrupted = 0;
    size_t work = 0; /* since the last check */
    if (want > 1)
        mc_team_enter();
    const mc_buffer all = mc_net_buffer(net);

    /* with fold and l2: sum ||W||^2 at the first batch's weights, a sweep of its own,
     * taken before the team starts (no thread of which may then step W while another
     * still reads it) */
    const double first_squares = net->l2 != 0 && fold ? MC_NAME(weight_squares)(net) : 0;

#ifdef _OPENMP
#pragma omp parallel num_threads(want) if (want > 1)
#endif
    {
        /* the threads the runtime gave, which may be fewer than asked for */
        const int t = mc_thread_num(), nt = mc_team_size();
        /* with fold and l2: sum ||W||^2 at the weights of the next forward pass, which
         * the last step's sweep summed */
        double squares = first_squares;
        size_t start, r;
        for (start = 0; start < n_order; start += batch) {
            const size_t B = n_order - start < batch ? n_order - start : batch;
            /* this batch's team: all nt threads, or thread 0 alone */
            const int tn = nt > 1 && mc_mlp_team_batch(net, B) ? nt : 1;
            const MC_T *in = X + (size_t)order[start] * I;
            double loss = 0, penalty = 0;
            size_t lo, hi;
            int u;
            mc_part(B, t < tn ? t : 0, tn, &lo, &hi);
            if (t >= tn)
                hi = lo = 0;
            /* rows that follow one another in X (no shuffling, full batch) are used in
             * place; others are gathered into the input workspace. With check_rows,
             * each thread checks its own rows for NaN and inf while they are in cache
             * (gathered rows just after their copy, rows used in place before the
             * pass), and the team stops before the pass of a batch holding one. */
            int finite = 1;
            for (r = 1; r < B && order[start + r] == order[start] + (int64_t)r; r++)
                ;
            const int gathered = r < B;
            if (gathered) {
                for (r = lo; r < hi; r++)
                    memcpy(x + r * I, X + (size_t)order[start + r] * I, I * sizeof(MC_T));
                in = x;
            }
            if (net->check_rows)
                finite = mc_all_finite(in + lo * I, (hi - lo) * I, MC_DTYPE);
            if (net->check_rows) {
                part_finite[t] = finite;
                if (nt > 1) {
                    MC_BARRIER();
                }
                for (u = 0; u < nt; u++)
                    finite &= part_finite[u];
                if (!finite) {
                    if (t == 0)
                        res.bad_input = 1;
                    break;
                }
            } else if (tn > 1 && gathered && mc_team_forward_cols(B, (size_t)net->sizes[1])) {
                MC_BARRIER(); /* every row gathered: the first product reads them all */
            }
            if (tn > 1)
                MC_NAME(forward_part)(net, in, B, t, tn);
            else if (t == 0)
                MC_NAME(forward_rows)(net, in, lo, hi, 0);
            if (t < tn) {
                part_loss[t] = MC_NAME(output_delta)(delta + lo * O, y + lo * O, T,
                                                     order + start + lo, hi - lo, B, O,
                                                     net->output, net->loss);
                part_correct[t] = MC_NAME(count_correct)(y + lo * O, T, order + start + lo,
                                                         hi - lo, O, net->accuracy);
            }
            if (nt > 1) {
                MC_BARRIER();
            }
            for (u = 0; u < tn; u++) {
                loss += part_loss[u];
                if (t == 0)
                    res.n_correct += part_correct[u];
            }
            /* The l2 term of E times B, l2/2 sum ||W||^2 at the weights of this forward
             * pass: with fold, the squares the previous step's sweep summed (a sweep of
             * its own for the first batch); without, those the backward pass sums, still
             * before the step. */
            if (net->l2 != 0 && fold)
                penalty = 0.5 * net->l2 * squares;
            if (!isfinite(loss + penalty)) {
                if (t == 0)
                    res.stopped = 1;
                break;
            }
            if (t < tn)
                part_squares[t] = MC_NAME(backward_part)(net, in, B, fold, (MC_T)hyper->lr,
                                                         (MC_T)hyper->momentum, NULL, t, tn);
            if (nt > 1) { /* every part of the step (or the gradient) done */
                MC_BARRIER();
            }
            squares = 0;
            for (u = 0; u < tn; u++)
                squares += part_squares[u];
            if (net->l2 != 0 && !fold) {
                penalty = 0.5 * net->l2 * squares;
                if (!isfinite(penalty)) {
                    if (t == 0)
                        res.stopped = 1;
                    break;
                }
            }
            if (!fold && t < tn) { /* the step, each thread on its part of the buffer */
                mc_buffer part = all;
                size_t p0, p1;
                mc_part(all.n, t, tn, &p0, &p1);
                part.w = (char *)all.w + p0 * sizeof(MC_T);
                part.g = (char *)all.g + p0 * sizeof(MC_T);
                part.s = (char *)all.s + p0 * sizeof(MC_T);
                part.n = p1 - p0;
                mc_momentum_step_threads(&part, 1, hyper, 0, 1);
            }
            if (t == 0) {
                res.sum_loss += loss + penalty;
                res.sum_penalty += penalty;
                res.n_steps++;
                work += B * net->n_params;
                if (net->check != NULL && work >= net->check_work) {
                    work = 0;
                    interrupted = net->check(net->check_ctx);
                }
            }
            if (nt > 1) { /* the step done; the interrupt known */
                MC_BARRIER();
            }
            if (interrupted) {
                if (t == 0)
                    res.interrupted = 1;
                break;
            }
        }
    }
    if (want > 1)
        mc_team_leave();
    return res;
}

/* ---- diagonal Gauss-Newton curvature (Becker & LeCun 1988) ----------------------
 *
 * h = d^2E/dz^2 for each unit's pre-activation z, its Gauss-Newton approximation
 * with the off-diagonal terms dropped, back-propagated like delta:
 *   output layer   h[r,j] = m(y[r,j]) / B, m the loss's second derivative in z:
 *                  softmax + cross-entropy  y (1 - y)   (the diagonal of diag(y) - y y^T)
 *                  sigmoid + binary CE      y (1 - y)
 *                  sigmoid + squared error  (y (1 - y))^2  (f'^2; the residual term dropped)
 *                  identity + squared error 1
 *   hidden layers  h_below[r,k] = f'(z[r,k])^2 sum_j W[k,j]^2 h[r,j]
 *   parameters     c(W[k,j]) = sum_r a[r,k]^2 h[r,j],   c(b[j]) = sum_r h[r,j]
 * Every factor is >= 0, so the curvature is too. */

/* h[B,O] := the output layer's Gauss-Newton diagonal (above) of the mean loss. */
MC_TARGET static void MC_NAME(output_curvature)(MC_T *h, const MC_T *y, size_t B, size_t O,
                                                int output, int loss)
{
    const MC_T inv_b = (MC_T)1 / (MC_T)B;
    size_t i;
    if (loss == MC_SQUARED_ERROR && output == MC_IDENTITY) {
        for (i = 0; i < B * O; i++)
            h[i] = inv_b;
    } else if (loss == MC_SQUARED_ERROR) { /* sigmoid */
        for (i = 0; i < B * O; i++) {
            const MC_T d = y[i] * ((MC_T)1 - y[i]);
            h[i] = d * d * inv_b;
        }
    } else { /* cross-entropy (softmax), binary cross-entropy (sigmoid) */
        for (i = 0; i < B * O; i++)
            h[i] = y[i] * ((MC_T)1 - y[i]) * inv_b;
    }
}

/* h[B,I] *= f'(z)^2, with f' written in terms of a = f(z) [B,I]. */
MC_TARGET static void MC_NAME(times_derivative_squared)(MC_T *h, const MC_T *a, size_t n,
                                                        int act)
{
    size_t i;
    switch (act) {
    case MC_SIGMOID:
        for (i = 0; i < n; i++) {
            const MC_T d = a[i] * ((MC_T)1 - a[i]);
            h[i] *= d * d;
        }
        break;
    case MC_TANH:
        for (i = 0; i < n; i++) {
            const MC_T d = (MC_T)1 - a[i] * a[i];
            h[i] *= d * d;
        }
        break;
    case MC_RELU:
        for (i = 0; i < n; i++)
            h[i] *= (MC_T)(a[i] > 0);
        break;
    default:
        break;
    }
}

/* sq[n] := x[n]^2 */
MC_TARGET static void MC_NAME(square)(MC_T *restrict sq, const MC_T *restrict x, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        sq[i] = x[i] * x[i];
}

/* One layer of the curvature pass: cW[I,O] = (a^2)^T h, cb[O] = sum_r h, and, with
 * below != NULL, below[B,I] = h (W^2)^T (times f'^2 by the caller). The same
 * products as the gradient pass with a, W squared: gemm on squares[] when the
 * layer is large, plain loops (squaring on the fly) otherwise. */
MC_TARGET static void MC_NAME(dense_curvature)(MC_T *cW, MC_T *cb, MC_T *below,
                                               MC_T *squares, const MC_T *h, const MC_T *a,
                                               const MC_T *W, size_t B, size_t I, size_t O)
{
    size_t r, k, j;
    if (MC_NAME(use_gemm)(B, I, O)) {
        if (below != NULL) { /* first: W^2 and a^2 share the squares workspace */
            MC_NAME(square)(squares, W, I * O);
            MC_NAME(gemm_rm)(0, 1, B, I, O, 1, h, O, squares, O, 0, below, I);
        }
        MC_NAME(square)(squares, a, B * I);
        MC_NAME(gemm_rm)(1, 0, I, O, B, 1, squares, I, h, O, 0, cW, O);
    } else {
        if (below != NULL)
            for (r = 0; r < B; r++)
                for (k = 0; k < I; k++) {
                    const MC_T *restrict hr = h + r * O, *restrict w = W + k * O;
                    MC_T acc = 0;
#pragma omp simd reduction(+ : acc)
                    for (j = 0; j < O; j++)
                        acc += hr[j] * (w[j] * w[j]);
                    below[r * I + k] = acc;
                }
        for (k = 0; k < I; k++) {
            MC_T *restrict c = cW + k * O;
            for (j = 0; j < O; j++)
                c[j] = 0;
            for (r = 0; r < B; r++) {
                const MC_T x = a[r * I + k], x2 = x * x;
                const MC_T *restrict hr = h + r * O;
                for (j = 0; j < O; j++)
                    c[j] += x2 * hr[j];
            }
        }
    }
    for (j = 0; j < O; j++)
        cb[j] = h[j];
    for (r = 1; r < B; r++)
        for (j = 0; j < O; j++)
            cb[j] += h[r * O + j];
}

/* curv[P] := the diagonal Gauss-Newton curvature of E (above) at the activations of
 * the last forward pass of x[B, sizes[0]]. */
MC_TARGET static void MC_NAME(curvature_backward)(const mc_mlp *net,
                                                  const mc_curvature_work *work,
                                                  const MC_T *x, size_t B, MC_T *curv)
{
    MC_T *h = (MC_T *)work->h, *below = (MC_T *)work->h_below;
    size_t offset = net->n_params;
    int i;
    MC_NAME(output_curvature)(h, (const MC_T *)net->acts[net->n_layers], B,
                              (size_t)net->sizes[net->n_layers], net->output, net->loss);
    for (i = net->n_layers - 1; i >= 0; i--) {
        const size_t I = (size_t)net->sizes[i], O = (size_t)net->sizes[i + 1];
        const MC_T *a = i == 0 ? x : (const MC_T *)net->acts[i];
        const MC_T *W = (const MC_T *)net->params + (offset -= I * O + O);
        MC_NAME(dense_curvature)(curv + offset, curv + offset + I * O, i > 0 ? below : NULL,
                                 (MC_T *)work->squares, h, a, W, B, I, O);
        if (i > 0) {
            MC_T *swap = h;
            MC_NAME(times_derivative_squared)(below, a, B * I, net->hidden);
            h = below;
            below = swap;
        }
    }
}

/* curv[P] += l2/B on every weight entry (not the biases): the curvature of the l2 term
 * l2/(2B) sum_i ||W_i||^2, exact and constant, scaled as the gradient's (l2/B) W. */
MC_TARGET static void MC_NAME(add_l2_curvature)(const mc_mlp *net, MC_T *curv, size_t B)
{
    const MC_T decay = (MC_T)(net->l2 / (double)B);
    size_t offset = 0, k;
    int i;
    for (i = 0; i < net->n_layers; i++) {
        const size_t I = (size_t)net->sizes[i], O = (size_t)net->sizes[i + 1];
        MC_T *restrict c = curv + offset;
        for (k = 0; k < I * O; k++)
            c[k] += decay;
        offset += I * O + O;
    }
}

/* The gradient (into net->grad, when it is not NULL) and the curvature (into curv)
 * of E over the n rows of X (the mean loss plus the l2 term), from one forward pass;
 * returns E. */
MC_TARGET static double MC_NAME(curvature)(const mc_mlp *net, const mc_curvature_work *work,
                                           const MC_T *X, const MC_T *T, size_t n,
                                           MC_T *curv, int64_t *n_correct)
{
    const size_t O = (size_t)net->sizes[net->n_layers];
    const MC_T *y = (const MC_T *)net->acts[net->n_layers];
    double total, squares = 0;
    MC_NAME(forward)(net, X, n, 0);
    total = MC_NAME(output_delta)((MC_T *)net->delta, y, T, NULL, n, n, O, net->output,
                                  net->loss);
    *n_correct += MC_NAME(count_correct)(y, T, NULL, n, O, net->accuracy);
    if (net->grad != NULL)
        squares = MC_NAME(backward)(net, X, n, 0, 0, 0, NULL);
    else if (net->l2 != 0)
        squares = MC_NAME(weight_squares)(net);
    MC_NAME(curvature_backward)(net, work, X, n, curv);
    if (net->l2 != 0) {
        MC_NAME(add_l2_curvature)(net, curv, n);
        total += 0.5 * net->l2 * squares;
    }
    return total / (double)n;
}
