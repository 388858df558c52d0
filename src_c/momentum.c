/*
 * The fused momentum step: SIMD-path instantiations, run-time dispatch and the
 * OpenMP split. The arithmetic itself lives in kernel_impl.h.
 */
#include "momcore_kernels.h"

#include <stdint.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "half.h"
#include "simd.h"

#if MC_X86
#include <cpuid.h>
#include <immintrin.h>
#endif

/* ---- instantiations: 4 types x (baseline, avx2, avx512) ---------------------- */

#define MC_INSTANTIATE "kernel_types.h"
#include "each_isa.h"
#undef MC_INSTANTIATE

/* ---- run-time dispatch ---------------------------------------------------- */

typedef void (*mc_step_f32_fn)(float *, const float *, float *, const float *, size_t,
                               const mc_hyper *);
typedef void (*mc_step_f64_fn)(double *, const double *, double *, const double *, size_t,
                               const mc_hyper *);
typedef void (*mc_step_half_fn)(uint16_t *, const uint16_t *, uint16_t *, const uint16_t *,
                                size_t, const mc_hyper *);
typedef int (*mc_nonfinite_f32_fn)(float *, const float *, float *, const float *, size_t,
                                   const mc_hyper *);
typedef int (*mc_nonfinite_f64_fn)(double *, const double *, double *, const double *,
                                   size_t, const mc_hyper *);
typedef int (*mc_nonfinite_half_fn)(uint16_t *, const uint16_t *, uint16_t *,
                                    const uint16_t *, size_t, const mc_hyper *);
typedef int (*mc_any_nonfinite_f32_fn)(const float *, size_t);
typedef int (*mc_any_nonfinite_f64_fn)(const double *, size_t);
typedef void (*mc_narrow_fn)(uint16_t *, const float *, size_t);
typedef void (*mc_widen_fn)(float *, const uint16_t *, size_t);

typedef struct {
    const char *name;
    mc_step_f32_fn step_f32;
    mc_step_f64_fn step_f64;
    mc_step_half_fn step_bf16, step_f16;
    mc_nonfinite_f32_fn step_nonfinite_f32;
    mc_nonfinite_f64_fn step_nonfinite_f64;
    mc_nonfinite_half_fn step_nonfinite_bf16, step_nonfinite_f16;
    mc_narrow_fn narrow_bf16, narrow_f16;
    mc_widen_fn widen_bf16, widen_f16;
    mc_any_nonfinite_f32_fn any_nonfinite_f32;
    mc_any_nonfinite_f64_fn any_nonfinite_f64;
} mc_isa_table;

#define MC_ISA_TABLE(isa)                                                                 \
    {#isa,                      step_f32_##isa,           step_f64_##isa,                  \
     step_bf16_##isa,           step_f16_##isa,           step_nonfinite_f32_##isa,        \
     step_nonfinite_f64_##isa,  step_nonfinite_bf16_##isa, step_nonfinite_f16_##isa,       \
     narrow_bf16_##isa,         narrow_f16_##isa,         widen_bf16_##isa,                \
     widen_f16_##isa,           any_nonfinite_f32_##isa,  any_nonfinite_f64_##isa}

/* Best first. */
static const mc_isa_table mc_isa_tables[] = {
#if MC_X86
    MC_ISA_TABLE(avx512),
    MC_ISA_TABLE(avx2),
#endif
    MC_ISA_TABLE(baseline),
};
#define MC_N_ISA (sizeof mc_isa_tables / sizeof mc_isa_tables[0])

static const mc_isa_table *mc_isa = NULL;

#if MC_X86
/* F16C from CPUID leaf 1 (ECX bit 29): older clang's __builtin_cpu_supports does not
 * know the name "f16c". The OS's YMM state is covered by the avx2 test beside it. */
static int mc_cpu_has_f16c(void)
{
    unsigned int a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return 0;
    return (c >> 29) & 1u;
}
#endif

int mc_isa_supported(const char *name)
{
    if (strcmp(name, "baseline") == 0)
        return 1;
#if MC_X86
    __builtin_cpu_init();
    if (strcmp(name, "avx2") == 0) /* the MLP passes of this path use FMA, float16 F16C */
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
               mc_cpu_has_f16c();
    if (strcmp(name, "avx512") == 0) /* the path's code assumes AVX2 and FMA too */
        return __builtin_cpu_supports("avx512f") && mc_isa_supported("avx2");
#endif
    return 0;
}

int mc_select_isa(const char *name)
{
    size_t i;
    for (i = 0; i < MC_N_ISA; i++) {
        const mc_isa_table *t = &mc_isa_tables[i];
        if (strcmp(name, "auto") != 0 && strcmp(name, t->name) != 0)
            continue;
        if (mc_isa_supported(t->name)) {
            mc_isa = t;
            return 0;
        }
        if (strcmp(name, "auto") != 0)
            return -1;
    }
    return -1;
}

static const mc_isa_table *current_isa(void)
{
    if (mc_isa == NULL)
        mc_select_isa("auto");
    return mc_isa;
}

const char *mc_isa_name(void) { return current_isa()->name; }

/* ---- threads ---------------------------------------------------------------- */

static int mc_threads = 0; /* 0: the OpenMP runtime's default */

int mc_have_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

void mc_set_num_threads(int n)
{
#ifdef _OPENMP
    /* more threads than processors never help a bandwidth-bound loop */
    if (n > omp_get_num_procs())
        n = omp_get_num_procs();
#endif
    mc_threads = n < 1 ? 0 : n;
}

int mc_get_num_threads(void)
{
#ifdef _OPENMP
    return mc_threads > 0 ? mc_threads : omp_get_max_threads();
#else
    return 1;
#endif
}

static int threads_for(size_t n, int max_threads)
{
    return n >= MC_OMP_MIN_ELEMENTS ? max_threads : 1;
}

#ifdef _OPENMP
/* [lo, hi) of thread t of nt: equal blocks of a multiple of 32 elements (64 bytes
 * of the 16-bit formats, 128 of float32), so that the threads' boundaries fall on
 * cache-line boundaries (when the array starts on one) and no line is written by
 * two threads. */
static void thread_range(size_t n, int t, int nt, size_t *lo, size_t *hi)
{
    size_t block = (n + (size_t)nt - 1) / (size_t)nt;
    block = (block + 31) & ~(size_t)31;
    *lo = block * (size_t)t < n ? block * (size_t)t : n;
    *hi = *lo + block < n ? *lo + block : n;
}
#endif

size_t mc_dtype_size(int dtype)
{
    return dtype == MC_FLOAT64 ? 8 : dtype == MC_FLOAT32 ? 4 : 2;
}

/* The per-weight momenta of b from element lo, which MC_QIAN reads; else NULL. */
static const void *momenta_at(const mc_buffer *b, const mc_hyper *h, size_t lo)
{
    if (h->rule != MC_QIAN || b->p == NULL)
        return NULL;
    return (const char *)b->p + lo * mc_dtype_size(b->dtype);
}

/* The operands of b from element lo, as pointers to T (w, g, s, p). */
#define MC_OPERANDS(T, b, h, lo)                                                    \
    (T *)(b)->w + (lo), (const T *)(b)->g + (lo), (T *)(b)->s + (lo),              \
        (const T *)momenta_at((b), (h), (lo))

static void step_range(const mc_isa_table *isa, const mc_buffer *b, size_t lo, size_t hi,
                       const mc_hyper *h)
{
    switch (b->dtype) {
    case MC_FLOAT32:
        isa->step_f32(MC_OPERANDS(float, b, h, lo), hi - lo, h);
        break;
    case MC_FLOAT64:
        isa->step_f64(MC_OPERANDS(double, b, h, lo), hi - lo, h);
        break;
    case MC_BFLOAT16:
        isa->step_bf16(MC_OPERANDS(uint16_t, b, h, lo), hi - lo, h);
        break;
    case MC_FLOAT16:
        isa->step_f16(MC_OPERANDS(uint16_t, b, h, lo), hi - lo, h);
        break;
    default:
        break;
    }
}

/* Whether the step of h on [lo, hi) would not be finite (see step_nonfinite). */
static int nonfinite_range(const mc_isa_table *isa, const mc_buffer *b, size_t lo, size_t hi,
                           const mc_hyper *h)
{
    switch (b->dtype) {
    case MC_FLOAT32:
        return isa->step_nonfinite_f32(MC_OPERANDS(float, b, h, lo), hi - lo, h);
    case MC_FLOAT64:
        return isa->step_nonfinite_f64(MC_OPERANDS(double, b, h, lo), hi - lo, h);
    case MC_BFLOAT16:
        return isa->step_nonfinite_bf16(MC_OPERANDS(uint16_t, b, h, lo), hi - lo, h);
    case MC_FLOAT16:
        return isa->step_nonfinite_f16(MC_OPERANDS(uint16_t, b, h, lo), hi - lo, h);
    default:
        return 1;
    }
}

void mc_round_to_half(uint16_t *dst, const float *src, size_t n, int dtype)
{
    const mc_isa_table *isa = current_isa();
    (dtype == MC_BFLOAT16 ? isa->narrow_bf16 : isa->narrow_f16)(dst, src, n);
}

void mc_widen_half(float *dst, const uint16_t *src, size_t n, int dtype)
{
    const mc_isa_table *isa = current_isa();
    (dtype == MC_BFLOAT16 ? isa->widen_bf16 : isa->widen_f16)(dst, src, n);
}

static int any_nonfinite(const mc_isa_table *isa, const mc_buffer *b, const mc_hyper *h,
                         int max_threads)
{
    const int nt = threads_for(b->n, max_threads);
    int found = 0;
    if (nt <= 1)
        return nonfinite_range(isa, b, 0, b->n, h);
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) reduction(| : found)
    {
        size_t lo, hi;
        thread_range(b->n, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        found |= nonfinite_range(isa, b, lo, hi, h);
    }
#endif
    return found;
}

static void step_one(const mc_isa_table *isa, const mc_buffer *b, const mc_hyper *h,
                     int max_threads)
{
    const int nt = threads_for(b->n, max_threads);
    if (nt <= 1) {
        step_range(isa, b, 0, b->n, h);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        size_t lo, hi;
        thread_range(b->n, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        step_range(isa, b, lo, hi, h);
    }
#endif
}

/* Whether every buffer's step stays finite: a dry run of the step that writes
 * nothing, so that with check_finite either every buffer is updated or none. */
static int all_finite(const mc_isa_table *isa, const mc_buffer *buffers,
                      const mc_hyper *hypers, size_t stride, size_t count, int max_threads)
{
    size_t i;
    for (i = 0; i < count; i++)
        if (any_nonfinite(isa, &buffers[i], &hypers[i * stride], max_threads))
            return 0;
    return 1;
}

/* The one loop behind every entry point: buffers[i] with hypers[i * stride]
 * (stride 0: one hyper for all). */
static int step_all(const mc_buffer *buffers, const mc_hyper *hypers, size_t stride,
                    size_t count, int check_finite, int max_threads)
{
    const mc_isa_table *isa = current_isa();
    size_t i;
    if (check_finite && !all_finite(isa, buffers, hypers, stride, count, max_threads))
        return 0;
    for (i = 0; i < count; i++)
        step_one(isa, &buffers[i], &hypers[i * stride], max_threads);
    return 1;
}

int mc_momentum_step_each_threads(const mc_buffer *buffers, const mc_hyper *hypers,
                                  size_t count, int check_finite, int max_threads)
{
    return step_all(buffers, hypers, 1, count, check_finite, max_threads);
}

int mc_momentum_step_each(const mc_buffer *buffers, const mc_hyper *hypers, size_t count,
                          int check_finite)
{
    return step_all(buffers, hypers, 1, count, check_finite, mc_get_num_threads());
}

int mc_momentum_step_threads(const mc_buffer *buffers, size_t count, const mc_hyper *hyper,
                             int check_finite, int max_threads)
{
    return step_all(buffers, hyper, 0, count, check_finite, max_threads);
}

int mc_momentum_step(const mc_buffer *buffers, size_t count, const mc_hyper *hyper,
                     int check_finite)
{
    return step_all(buffers, hyper, 0, count, check_finite, mc_get_num_threads());
}

/* ---- finiteness of an input array ---------------------------------------------- */

/* Whether x[lo:hi] holds a NaN or +-inf, on the calling thread. */
static int nonfinite_in(const mc_isa_table *isa, const void *x, size_t lo, size_t hi,
                        int dtype)
{
    if (dtype == MC_FLOAT64)
        return isa->any_nonfinite_f64((const double *)x + lo, hi - lo);
    return isa->any_nonfinite_f32((const float *)x + lo, hi - lo);
}

int mc_all_finite(const void *x, size_t n, int dtype)
{
    return !nonfinite_in(current_isa(), x, 0, n, dtype);
}

/* ---- copies --------------------------------------------------------------------- */

void mc_copy(void *dst, const void *src, size_t bytes, int max_threads)
{
#ifdef _OPENMP
    const int nt = threads_for(bytes / 8, max_threads);
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        {
            /* whole 64-byte lines a thread, the last thread to the end */
            const size_t lines = (bytes + 63) / 64;
            const size_t t = (size_t)omp_get_thread_num(), n = (size_t)omp_get_num_threads();
            const size_t lo = lines * t / n * 64;
            const size_t hi = t + 1 == n ? bytes : lines * (t + 1) / n * 64;
            if (hi > lo)
                memcpy((char *)dst + lo, (const char *)src + lo, hi - lo);
        }
        return;
    }
#else
    (void)max_threads;
#endif
    memcpy(dst, src, bytes);
}

/* ---- permutations --------------------------------------------------------------- */

/* A value in [0, max] from next32 (numpy's masked rejection, random_interval in
 * numpy/random/src/distributions/distributions.c, for max < 2^32): the low bits of
 * each draw under the smallest all-ones mask >= max, until one is <= max. */
static uint32_t interval32(uint32_t max, uint32_t (*next32)(void *), void *state)
{
    uint32_t mask = max, value;
    mask |= mask >> 1;
    mask |= mask >> 2;
    mask |= mask >> 4;
    mask |= mask >> 8;
    mask |= mask >> 16;
    do
        value = next32(state) & mask;
    while (value > max);
    return value;
}

void mc_permutation(int64_t *out, uint32_t n, uint32_t (*next32)(void *), void *state)
{
    uint32_t i;
    for (i = 0; i < n; i++)
        out[i] = i;
    /* Fisher-Yates from the top, as numpy's shuffle: position i swaps with a draw from
     * [0, i] (i = 0 draws nothing) */
    for (i = n > 0 ? n - 1 : 0; i > 0; i--) {
        const uint32_t j = interval32(i, next32, state);
        const int64_t t = out[i];
        out[i] = out[j];
        out[j] = t;
    }
}

/* ---- roofline ------------------------------------------------------------------ */

#define MC_STREAM5(T)                                                      \
    do {                                                                   \
        T *restrict w = (T *)b->w + lo;                                    \
        const T *restrict g = (const T *)b->g + lo;                        \
        T *restrict s = (T *)b->s + lo;                                    \
        size_t i, m = hi - lo;                                             \
        for (i = 0; i < m; i++) {                                          \
            s[i] = s[i] + g[i];                                            \
            w[i] = w[i] + g[i];                                            \
        }                                                                  \
    } while (0)

static void stream5_range(const mc_buffer *b, size_t lo, size_t hi)
{
    if (b->dtype == MC_FLOAT32)
        MC_STREAM5(float);
    else if (b->dtype == MC_FLOAT64)
        MC_STREAM5(double);
    else {
        /* 16-bit formats: the same five streams, with integer operations that leave
         * the values as they are (mask is 0, which the compiler cannot know) */
        const uint16_t mask = (uint16_t)(b->n == 0);
        uint16_t *restrict w = (uint16_t *)b->w + lo;
        const uint16_t *restrict g = (const uint16_t *)b->g + lo;
        uint16_t *restrict s = (uint16_t *)b->s + lo;
        size_t i, m = hi - lo;
        for (i = 0; i < m; i++) {
            s[i] = (uint16_t)(s[i] ^ (g[i] & mask));
            w[i] = (uint16_t)(w[i] ^ (g[i] & mask));
        }
    }
}

void mc_stream5(const mc_buffer *b)
{
    const int nt = threads_for(b->n, mc_get_num_threads());
    if (nt <= 1) {
        stream5_range(b, 0, b->n);
        return;
    }
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
    {
        size_t lo, hi;
        thread_range(b->n, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
        stream5_range(b, lo, hi);
    }
#endif
}

/* ---- names ------------------------------------------------------------------- */

int mc_find_name(const char *const *names, int count, const char *name)
{
    int i;
    for (i = 0; i < count; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

int mc_rule_code(const char *name)
{
    static const char *const names[] = {MC_RULE_LIST(MC_NAME_OF_ENTRY)};
    return mc_find_name(names, MC_N_RULES, name);
}
