/*
 * MLP passes: instantiations of mlp_impl.h per element type and SIMD path, run-time
 * dispatch (the path the momentum kernel uses), and the gemm registry.
 */
/* The MLP passes are checked against the numpy backend to a tolerance, not bit for
 * bit (BLAS and the vector math library reorder and round differently anyway), so
 * here, unlike in the momentum kernel, a*b + c may become one fused multiply-add. */
#if defined(__clang__)
#pragma clang fp contract(fast)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=fast")
#endif

#include "mlp.h"

#include <float.h>
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* exp and tanh of the activation loops: vectorised through libmvec where the
 * running glibc has it (vmath.h). */
#include "vmath.h"
/* log, of the losses, at the version of the oldest supported glibc */
#include "glibc_symver.h"
#include "simd.h"

static mc_sgemm_t mc_sgemm = NULL;
static mc_dgemm_t mc_dgemm = NULL;

void mc_set_gemm(mc_sgemm_t sgemm, mc_dgemm_t dgemm)
{
    mc_sgemm = sgemm;
    mc_dgemm = dgemm;
}

/* ---- teams of threads for the minibatch steps ------------------------------------ */

/* BLAS's own thread count, to hold gemm to the calling thread while a team of
 * momcore's threads runs: OpenBLAS's openblas_set_num_threads/get_num_threads, or
 * NULL (no team then). */
static mc_set_threads_t blas_set_threads = NULL;
static mc_get_threads_t blas_get_threads = NULL;
static int team_depth = 0;   /* epochs running on teams, in every thread */
static int blas_threads = 0; /* BLAS's thread count before the first of them */

void mc_set_blas_threads(mc_set_threads_t set, mc_get_threads_t get)
{
    blas_set_threads = set != NULL && get != NULL ? set : NULL;
    blas_get_threads = set != NULL && get != NULL ? get : NULL;
}

int mc_mlp_team_batch(const mc_mlp *net, size_t B)
{
    const int have_gemm = net->dtype == MC_FLOAT32 ? mc_sgemm != NULL : mc_dgemm != NULL;
    size_t macs = 0;
    int i;
    if (!have_gemm || B == 0)
        return 0;
    for (i = 0; i < net->n_layers; i++) {
        const size_t layer = B * (size_t)net->sizes[i] * (size_t)net->sizes[i + 1];
        if (layer < MC_GEMM_MIN_MACS)
            return 0;
        macs += layer;
    }
    return macs >= MC_TEAM_MIN_MACS;
}

int mc_mlp_team_threads(const mc_mlp *net, size_t batch)
{
    int nt = mc_get_num_threads();
    if (nt > MC_TEAM_MAX)
        nt = MC_TEAM_MAX;
    return nt > 1 && blas_set_threads != NULL && mc_mlp_team_batch(net, batch) ? nt : 1;
}

/* Sets BLAS to one thread until the last team's mc_team_leave. BLAS's thread count
 * is the process's: while a team runs, other threads' gemm calls run on one thread
 * too. */
static void mc_team_enter(void)
{
#ifdef _OPENMP
#pragma omp critical(mc_blas_threads)
#endif
    {
        if (team_depth++ == 0) {
            blas_threads = blas_get_threads();
            blas_set_threads(1);
        }
    }
}

void mc_team_after_fork(void)
{
    if (team_depth > 0) {
        team_depth = 0;
        blas_set_threads(blas_threads);
    }
}

static void mc_team_leave(void)
{
#ifdef _OPENMP
#pragma omp critical(mc_blas_threads)
#endif
    {
        if (--team_depth == 0)
            blas_set_threads(blas_threads);
    }
}

/* A barrier of the team a function runs in (none outside a parallel region). */
#ifdef _OPENMP
#define MC_BARRIER() _Pragma("omp barrier")
#else
#define MC_BARRIER() ((void)0)
#endif

static int mc_thread_num(void)
{
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

/* The threads of the innermost parallel region the caller runs in (1 outside one). */
static int mc_team_size(void)
{
#ifdef _OPENMP
    return omp_get_num_threads();
#else
    return 1;
#endif
}

/* [*lo, *hi): the t-th of nt contiguous parts of n items, in order. */
static void mc_part(size_t n, int t, int nt, size_t *lo, size_t *hi)
{
    *lo = n * (size_t)t / (size_t)nt;
    *hi = n * (size_t)(t + 1) / (size_t)nt;
}

/* [*lo, *hi): the t-th of nt contiguous parts of the n rows or columns of a weight
 * matrix of `size`-byte elements, in whole cache lines of elements (but the last
 * part): threads that write their columns of the same rows (a column split's
 * products) then write no cache line in common where the rows start on one. */
static void mc_weight_part(size_t n, size_t size, int t, int nt, size_t *lo, size_t *hi)
{
    const size_t unit = size < 64 ? 64 / size : 1;
    mc_part((n + unit - 1) / unit, t, nt, lo, hi);
    *lo = *lo * unit < n ? *lo * unit : n;
    *hi = *hi * unit < n ? *hi * unit : n;
}

/* How a team splits the products of a layer of I inputs and O outputs at B rows. A
 * thread's gemm packs both operands of its product, so each product is split the way
 * that leaves a thread fewer elements to pack: by batch rows, the whole of W and its
 * 1/nt of the other operand; by weights, its 1/nt of W and the whole of the other.
 *   forward, out[B,O] = in[B,I] W: by columns of W when O > B (I O + B I/nt against
 *     I O/nt + B I).
 *   delta below, below[B,I] = delta[B,O] W^T: by weight rows when I > B.
 *   weight gradient, a^T[I,B] delta[B,O]: by weight columns when I < O, else by weight
 *     rows (never by batch rows, which would sum the parts of every weight).
 * On ties, by batch rows (fewer barriers). */
static int mc_team_forward_cols(size_t B, size_t O)
{
    return O > B;
}

static int mc_team_below_cols(size_t B, size_t I)
{
    return I > B;
}

static int mc_team_gradient_cols(size_t I, size_t O)
{
    return I < O;
}

/* The network's whole parameter buffer as the step's operand (weights, gradient,
 * state). */
static mc_buffer mc_net_buffer(const mc_mlp *net)
{
    mc_buffer all;
    all.w = net->params;
    all.g = net->grad;
    all.s = net->state;
    all.n = net->n_params;
    all.dtype = net->dtype;
    all.p = NULL;
    return all;
}

#define MC_INSTANTIATE "mlp_types.h"
#include "each_isa.h"
#undef MC_INSTANTIATE

/* ---- run-time dispatch: the SIMD path the momentum kernel uses ---------------- */

typedef struct {
    const char *name;
    void (*predict_f32)(const mc_mlp *, const float *, size_t, float *);
    void (*predict_f64)(const mc_mlp *, const double *, size_t, double *);
    double (*gradients_f32)(const mc_mlp *, const float *, const float *, size_t, int64_t *);
    double (*gradients_f64)(const mc_mlp *, const double *, const double *, size_t,
                            int64_t *);
    double (*curvature_f32)(const mc_mlp *, const mc_curvature_work *, const float *,
                            const float *, size_t, float *, int64_t *);
    double (*curvature_f64)(const mc_mlp *, const mc_curvature_work *, const double *,
                            const double *, size_t, double *, int64_t *);
    double (*gradient_share_f32)(const mc_mlp *, const float *, const float *, const int64_t *,
                                 size_t, size_t, double, int64_t *, double *);
    double (*gradient_share_f64)(const mc_mlp *, const double *, const double *,
                                 const int64_t *, size_t, size_t, double, int64_t *, double *);
    mc_fit_result (*train_epoch_f32)(const mc_mlp *, const float *, const float *,
                                     const int64_t *, size_t, size_t, const mc_hyper *, int);
    mc_fit_result (*train_epoch_f64)(const mc_mlp *, const double *, const double *,
                                     const int64_t *, size_t, size_t, const mc_hyper *, int);
} mc_mlp_table;

#define MC_MLP_TABLE(isa)                                                             \
    {                                                                                 \
        #isa, predict_f32_##isa, predict_f64_##isa, gradients_f32_##isa,              \
            gradients_f64_##isa, curvature_f32_##isa, curvature_f64_##isa,            \
            gradient_share_f32_##isa, gradient_share_f64_##isa,                       \
            train_epoch_f32_##isa, train_epoch_f64_##isa                              \
    }

static const mc_mlp_table mc_mlp_tables[] = {
#if MC_X86
    MC_MLP_TABLE(avx512),
    MC_MLP_TABLE(avx2),
#endif
    MC_MLP_TABLE(baseline),
};

static const mc_mlp_table *current_table(void)
{
    const char *name = mc_isa_name();
    size_t i;
    for (i = 0; i + 1 < sizeof mc_mlp_tables / sizeof mc_mlp_tables[0]; i++)
        if (strcmp(name, mc_mlp_tables[i].name) == 0)
            return &mc_mlp_tables[i];
    return &mc_mlp_tables[i];
}

void mc_mlp_predict(const mc_mlp *net, const void *X, size_t n, void *Y)
{
    if (net->dtype == MC_FLOAT32)
        current_table()->predict_f32(net, (const float *)X, n, (float *)Y);
    else
        current_table()->predict_f64(net, (const double *)X, n, (double *)Y);
}

double mc_mlp_gradients(const mc_mlp *net, const void *X, const void *T, size_t n,
                        int64_t *n_correct)
{
    if (net->dtype == MC_FLOAT32)
        return current_table()->gradients_f32(net, (const float *)X, (const float *)T, n,
                                              n_correct);
    return current_table()->gradients_f64(net, (const double *)X, (const double *)T, n,
                                          n_correct);
}

double mc_mlp_curvature(const mc_mlp *net, const mc_curvature_work *work, const void *X,
                        const void *T, size_t n, void *curv, int64_t *n_correct)
{
    if (net->dtype == MC_FLOAT32)
        return current_table()->curvature_f32(net, work, (const float *)X, (const float *)T,
                                              n, (float *)curv, n_correct);
    return current_table()->curvature_f64(net, work, (const double *)X, (const double *)T, n,
                                          (double *)curv, n_correct);
}

double mc_mlp_gradient_share(const mc_mlp *net, const void *X, const void *T,
                             const int64_t *rows, size_t n, size_t divisor, double l2,
                             int64_t *n_correct, double *squares)
{
    if (net->dtype == MC_FLOAT32)
        return current_table()->gradient_share_f32(net, (const float *)X, (const float *)T,
                                                   rows, n, divisor, l2, n_correct, squares);
    return current_table()->gradient_share_f64(net, (const double *)X, (const double *)T,
                                               rows, n, divisor, l2, n_correct, squares);
}

mc_fit_result mc_mlp_train_epoch(const mc_mlp *net, const void *X, const void *T,
                                 const int64_t *order, size_t n_order, size_t batch,
                                 const mc_hyper *hyper, int fold)
{
    if (net->dtype == MC_FLOAT32)
        return current_table()->train_epoch_f32(net, (const float *)X, (const float *)T, order, n_order, batch,
                               hyper, fold);
    return current_table()->train_epoch_f64(net, (const double *)X, (const double *)T, order, n_order, batch,
                           hyper, fold);
}

/* ---- names ------------------------------------------------------------------- */

int mc_activation_code(const char *name)
{
    static const char *const names[] = {MC_ACTIVATION_LIST(MC_NAME_OF_ENTRY)};
    return mc_find_name(names, MC_N_ACTIVATIONS, name);
}

int mc_loss_code(const char *name)
{
    static const char *const names[] = {MC_LOSS_LIST(MC_NAME_OF_ENTRY)};
    return mc_find_name(names, MC_N_LOSSES, name);
}

int mc_accuracy_code(const char *name)
{
    static const char *const names[] = {MC_ACCURACY_LIST(MC_NAME_OF_ENTRY)};
    return mc_find_name(names, MC_N_ACCURACIES, name);
}
