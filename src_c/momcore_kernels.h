/*
 * momcore kernels: the fused in-place momentum update.
 *
 * Plain C99: no Python or numpy headers, callable and testable from C.
 *
 * Legend: n = number of elements of one parameter array (any shape, flattened,
 * C-contiguous). w = weights, g = gradient dE/dw (read only), s = the rule's state.
 *
 * Every rule reads w, g, s once and writes w, s once: five streams, one pass,
 * no temporaries. The arithmetic is done in the array's own precision in a fixed
 * order, without FMA contraction, so results are identical for every SIMD path
 * and every thread count, and equal to the numpy reference operation for operation.
 */
#ifndef MOMCORE_KERNELS_H
#define MOMCORE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The update rules: each line gives the C code and the name momcore.registry gives
 * the rule (the order fixes the codes). With g standing for g' (see mc_hyper), each
 * right-hand side is evaluated in the order its parentheses and left-to-right
 * reading give. */
#define MC_RULE_LIST(X)                                                                  \
    X(MC_CLASSICAL, "classical")                 /* s = m*s - lr*g ; w = w + s */         \
    X(MC_NESTEROV, "nesterov")                   /* s = m*s - lr*g ; w = (w + m*s) - lr*g */ \
    X(MC_VELOCITY, "velocity")                   /* s = m*s + (1-d)*g ; w = w - lr*s */   \
    X(MC_EMA, "ema")                             /* MC_VELOCITY with d = m */              \
    X(MC_ONE_STEP, "one_step")     /* step = -lr*g ; w = (w + step) + m*s ; s = step */   \
    X(MC_NESTEROV_VELOCITY, "nesterov_velocity") /* s = m*s + g ; w = w - lr*(g + m*s) */ \
    X(MC_QIAN, "qian")   /* s = p[i]*s - lr*g ; w = w + s (p NULL: p[i] = m, classical) */

/* X-macro helpers: the enum entry, and the name, of one line of a list. */
#define MC_CODE_OF_ENTRY(code, name) code,
#define MC_NAME_OF_ENTRY(code, name) name,

typedef enum {
    MC_RULE_LIST(MC_CODE_OF_ENTRY)
    MC_N_RULES /* the number of rules; codes are 0..MC_N_RULES-1 */
} mc_rule;

/* The index of `name` among names[0..count-1], or -1. */
int mc_find_name(const char *const *names, int count, const char *name);

/* The mc_rule called `name` (momcore.registry's name), or -1. */
int mc_rule_code(const char *name);

/* Storage types. bfloat16 and float16 are stored as uint16_t bit patterns and
 * computed in float32: each element is widened exactly, stepped with the float32
 * operations, and each new w and state value is rounded once, to nearest even,
 * as it is stored (NaN stays NaN; float16 overflows to inf above 65504 and
 * underflows gradually). The result is the float32 step of the widened arrays,
 * rounded: the same bits on every SIMD path. */
typedef enum { MC_FLOAT32 = 0, MC_FLOAT64 = 1, MC_BFLOAT16 = 2, MC_FLOAT16 = 3 } mc_dtype;

/* Bytes per element of an mc_dtype. */
size_t mc_dtype_size(int dtype);

/* dst[0:n] := src[0:n] rounded to dtype (MC_BFLOAT16 or MC_FLOAT16) as the step
 * stores it, on the selected SIMD path; and the exact widening back. */
void mc_round_to_half(uint16_t *dst, const float *src, size_t n, int dtype);
void mc_widen_half(float *dst, const uint16_t *src, size_t n, int dtype);

/* Hyperparameters of one step; validated by the caller. With weight_decay != 0
 * every rule uses g' = g + weight_decay*w in place of g (g is never written). */
typedef struct {
    double lr;
    double momentum;
    double dampening;    /* MC_VELOCITY only (the caller keeps it 0 for the others) */
    double weight_decay;
    int rule;            /* an mc_rule */
} mc_hyper;

/* One parameter array with its gradient and state, all of n elements of dtype. */
typedef struct {
    void *w;        /* [n] */
    const void *g;  /* [n] */
    void *s;        /* [n] */
    size_t n;
    int dtype;      /* an mc_dtype */
    const void *p;  /* [n] per-weight momentum, read by MC_QIAN only; NULL: the scalar
                     * momentum. Last, so that initialisers of the first five fields
                     * leave it NULL. */
} mc_buffer;

/* Applies one step with `hyper` to every buffer. With check_finite != 0, first
 * runs the step dry (computing, not writing) over all buffers and, if any
 * gradient element is NaN or +-inf or the step would write one into w or the
 * state (an overflow from finite values), returns 0 without writing anything;
 * otherwise applies the step and returns 1. Cost: 5 streams of n (6 for MC_QIAN
 * with per-weight momentum), plus 3 read streams (w, g, state; 4 with p) when
 * check_finite. */
int mc_momentum_step(const mc_buffer *buffers, size_t count, const mc_hyper *hyper,
                     int check_finite);

/* mc_momentum_step on at most max_threads threads (1: the calling thread only). */
int mc_momentum_step_threads(const mc_buffer *buffers, size_t count, const mc_hyper *hyper,
                             int check_finite, int max_threads);

/* As mc_momentum_step, but buffers[i] is stepped with hypers[i] (parameter groups,
 * each with its own rule and hyperparameters, in one call). check_finite runs every
 * buffer's step dry before anything is written: all are updated or none. */
int mc_momentum_step_each(const mc_buffer *buffers, const mc_hyper *hypers, size_t count,
                          int check_finite);

/* mc_momentum_step_each on at most max_threads threads. */
int mc_momentum_step_each_threads(const mc_buffer *buffers, const mc_hyper *hypers,
                                  size_t count, int check_finite, int max_threads);

/* Threads used above MC_OMP_MIN_ELEMENTS (1 without OpenMP). n < 1 restores the
 * default (the OpenMP runtime's maximum). */
void mc_set_num_threads(int n);
int mc_get_num_threads(void);
int mc_have_openmp(void);

/* Arrays of at least this many elements are split across threads. */
#define MC_OMP_MIN_ELEMENTS ((size_t)1 << 16)

/* mc_all_finite tests this many elements at a time between its checks for a find. */
#define MC_FINITE_BLOCK ((size_t)1 << 12)

/* SIMD paths: "avx512", "avx2", "baseline". mc_select_isa("auto") picks the best
 * the CPU supports; returns 0 on success, -1 if the path is unknown, not built
 * or not supported by this CPU. */
int mc_select_isa(const char *name);
const char *mc_isa_name(void);
int mc_isa_supported(const char *name);

/* 1 if no element of x[0:n] (MC_FLOAT32 or MC_FLOAT64) is NaN or +-inf, else 0: the
 * exponent bits tested as integers (no floating-point exceptions, no temporaries), in
 * vectorised blocks of the SIMD path in use, stopping after the first block that holds
 * one; on the calling thread (the epochs call it from within their teams, and MLP.fit
 * between BLAS calls, whose thread pool may still spin on the other cores). */
int mc_all_finite(const void *x, size_t n, int dtype);

/* dst[0:bytes] := src[0:bytes] (not overlapping), split across up to max_threads
 * threads in whole 64-byte lines when the copy holds MC_OMP_MIN_ELEMENTS 8-byte words
 * or more. */
void mc_copy(void *dst, const void *src, size_t bytes, int max_threads);

/* out[0:n] := the permutation of 0..n-1 that numpy's Generator.permutation(n) gives
 * for a bit generator whose next_uint32 is next32(state) (numpy's bitgen_t), drawn
 * the same way: numpy's shuffle of 0..n-1, each index by masked rejection (n < 2^32,
 * where numpy draws 32 bits an index). The caller holds the bit generator's lock. */
void mc_permutation(int64_t *out, uint32_t n, uint32_t (*next32)(void *), void *state);

/* Benchmark-only roofline: a plain loop over the same five streams as the step
 * (read w, g, s; write w, s), compiled for the baseline ISA and split across
 * threads exactly as the step is. w = w + g ; s = s + g (for the 16-bit formats an
 * integer operation that leaves w and s as they are). */
void mc_stream5(const mc_buffer *buffer);

#ifdef __cplusplus
}
#endif

#endif
