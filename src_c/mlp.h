/*
 * momcore MLP passes: dense forward and backward passes of a multilayer
 * perceptron, and whole training epochs, on one flat parameter buffer.
 *
 * Plain C99: no Python or numpy headers. Matrix products of large layers go to
 * a BLAS gemm that the caller registers (Fortran calling convention, column-
 * major); small ones run as plain loops. MC_GEMM_MIN_MACS decides.
 *
 * Legend: B = batch rows, I = inputs of a layer (sizes[i]), O = outputs of a
 * layer (sizes[i+1]), L = number of layers, P = number of parameters.
 * Flat layout: W0 (I0 x O0, row-major), b0 (O0), W1, b1, ... Gradients and the
 * optimizer state use the same layout.
 */
#ifndef MOMCORE_MLP_H
#define MOMCORE_MLP_H

#include <stddef.h>
#include <stdint.h>

#include "momcore_kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Activations of hidden and output layers: the C code and the registry's name. */
#define MC_ACTIVATION_LIST(X)                                                            \
    X(MC_SIGMOID, "sigmoid")                                                             \
    X(MC_TANH, "tanh")                                                                   \
    X(MC_RELU, "relu")                                                                   \
    X(MC_IDENTITY, "identity")                                                           \
    X(MC_SOFTMAX, "softmax")

typedef enum {
    MC_ACTIVATION_LIST(MC_CODE_OF_ENTRY)
    MC_N_ACTIVATIONS /* the number of activations; codes are 0..MC_N_ACTIVATIONS-1 */
} mc_activation;

/* The per-sample loss of the output layer (E is its mean over the rows of a batch);
 * tiny = the smallest normal number of the dtype:
 *   MC_CROSS_ENTROPY         -sum_j t_j log max(y_j, tiny)          (softmax output)
 *   MC_BINARY_CROSS_ENTROPY  -sum_j t_j log max(y_j, tiny)
 *                                 + (1 - t_j) log max(1 - y_j, tiny) (sigmoid output)
 *   MC_SQUARED_ERROR         1/2 sum_j (t_j - y_j)^2     (sigmoid or identity output)
 * A log term whose coefficient (t_j or 1 - t_j) is 0 is skipped. */
#define MC_LOSS_LIST(X)                                                                  \
    X(MC_CROSS_ENTROPY, "cross_entropy")                                                 \
    X(MC_BINARY_CROSS_ENTROPY, "binary_cross_entropy")                                   \
    X(MC_SQUARED_ERROR, "squared_error")

typedef enum {
    MC_LOSS_LIST(MC_CODE_OF_ENTRY)
    MC_N_LOSSES /* the number of losses; codes are 0..MC_N_LOSSES-1 */
} mc_loss;

/* Which rows count as correct in the training accuracy:
 *   MC_ACC_NONE       none (regression)
 *   MC_ACC_ARGMAX     argmax y == argmax t, the first maximum on ties (one class per row)
 *   MC_ACC_THRESHOLD  (y_j >= 1/2) == (t_j >= 1/2) for every unit j (binary, multilabel) */
#define MC_ACCURACY_LIST(X)                                                              \
    X(MC_ACC_NONE, "none")                                                               \
    X(MC_ACC_ARGMAX, "argmax")                                                           \
    X(MC_ACC_THRESHOLD, "threshold")

typedef enum {
    MC_ACCURACY_LIST(MC_CODE_OF_ENTRY)
    MC_N_ACCURACIES /* the number of modes; codes are 0..MC_N_ACCURACIES-1 */
} mc_accuracy;

/* The code of an activation, loss or accuracy mode called `name`, or -1. */
int mc_activation_code(const char *name);
int mc_loss_code(const char *name);
int mc_accuracy_code(const char *name);

/* Outputs per register-resident block in the loop forward pass. */
#define MC_FORWARD_BLOCK 32

/* A layer product of B*I*O multiply-adds at or above this goes to BLAS gemm. */
#define MC_GEMM_MIN_MACS ((size_t)1 << 15)

/* BLAS ?gemm, Fortran convention: C := alpha op(A) op(B) + beta C, column-major. */
typedef void (*mc_sgemm_t)(char *transa, char *transb, int *m, int *n, int *k, float *alpha,
                           float *a, int *lda, float *b, int *ldb, float *beta, float *c,
                           int *ldc);
typedef void (*mc_dgemm_t)(char *transa, char *transb, int *m, int *n, int *k, double *alpha,
                           double *a, int *lda, double *b, int *ldb, double *beta, double *c,
                           int *ldc);

/* Registers the gemm routines; without them every product runs as plain loops. */
void mc_set_gemm(mc_sgemm_t sgemm, mc_dgemm_t dgemm);

/* Registers the BLAS's functions that set and get its thread count (OpenBLAS's
 * openblas_set_num_threads, openblas_get_num_threads). With them, a training epoch
 * whose batches run every product on gemm (and enough of them, MC_TEAM_MIN_MACS
 * multiply-adds a step) runs on a team of mc_get_num_threads() threads, each calling
 * gemm on its share with BLAS set to one thread for the epoch (the passes between
 * the products then run on every core, not on one while BLAS's pool spins). Without
 * them (or NULL), epochs run on the calling thread and gemm on BLAS's threads. */
typedef void (*mc_set_threads_t)(int);
typedef int (*mc_get_threads_t)(void);
void mc_set_blas_threads(mc_set_threads_t set, mc_get_threads_t get);

/* In the child of a fork() made while an epoch ran on a team (in another thread of the
 * parent): gives BLAS back the thread count the team had saved, which no team of the
 * child will restore. */
void mc_team_after_fork(void);

/* The most threads of a team; the multiply-adds of a step below which a batch runs on
 * the calling thread (smaller steps gained on a team as well, down to 2^16 on two
 * threads, but stay on one so that their results do not change with the thread
 * count: a team's split products round differently). No rule on the rows a thread: a
 * team splits each product the way that packs fewer elements a thread (mlp.c:
 * mc_team_forward_cols), so that a narrow batch does not make every thread pack
 * whole weight matrices. */
#define MC_TEAM_MAX 64
#define MC_TEAM_MIN_MACS ((size_t)1 << 20)


/* A network and its workspaces, all owned by the caller. */
typedef struct {
    int dtype;            /* mc_dtype */
    int n_layers;         /* L */
    const int64_t *sizes; /* [L+1] */
    size_t n_params;      /* P = sum of sizes[i]*sizes[i+1] + sizes[i+1] */
    int hidden;           /* mc_activation of layers 0..L-2 */
    int output;           /* mc_activation of layer L-1: MC_SOFTMAX, MC_SIGMOID or MC_IDENTITY */
    int loss;             /* mc_loss, paired with output by the caller */
    int accuracy;         /* mc_accuracy */
    void *params;         /* [P] */
    void *state;          /* [P] optimizer state */
    void *grad;           /* [P] gradient; may be NULL when every step is folded */
    size_t max_batch;     /* rows the workspaces hold */
    void **acts;          /* [L+1] pointers, acts[i] holds [max_batch * sizes[i]] */
    void *delta;          /* [max_batch * max(sizes)] */
    void *delta_prev;     /* [max_batch * max(sizes)] */
    void *scratch;        /* [max(sizes)] one row of a weight gradient */
    /* Interrupts of mc_mlp_train_epoch: after a batch, once at least check_work units
     * of work (rows x P) were done since the last call, check(check_ctx) runs; a
     * nonzero result ends the epoch there, with every step so far applied and
     * counted. check NULL: never. */
    int (*check)(void *ctx);
    void *check_ctx;
    size_t check_work;
    /* Nonzero: mc_mlp_train_epoch checks every row of X it reads for NaN and inf as it
     * gathers them, and stops before the forward pass of a batch that holds one. */
    int check_rows;
    double l2;            /* L2 penalty on the weights (not the biases): a batch of B rows
                           * has E = mean loss + l2/(2B) sum_i ||W_i||^2 */
} mc_mlp;

/* Result of a run of training steps. */
typedef struct {
    double sum_loss;    /* sum of the per-sample losses, each at its forward pass, plus
                         * per batch l2/2 sum_i ||W_i||^2 at the weights of that pass */
    double sum_penalty; /* the l2 part of sum_loss */
    int64_t n_correct;  /* rows counted correct by net->accuracy */
    int64_t n_steps;    /* steps applied */
    int stopped;        /* 1: a batch's loss was not finite; it was not applied */
    int interrupted;    /* 1: net->check asked to stop; the steps before it were applied */
    int bad_input;      /* 1 (with net->check_rows): a row of a batch held NaN or inf; the
                         * epoch stopped before that batch's forward pass, the steps
                         * before it were applied */
} mc_fit_result;

/* Outputs of the network for X[n, sizes[0]] into Y[n, sizes[L]], max_batch rows
 * at a time. */
void mc_mlp_predict(const mc_mlp *net, const void *X, size_t n, void *Y);

/* dE/dparams into net->grad for E = the mean loss over the n rows of X with
 * targets T[n, sizes[L]] (n <= max_batch) plus l2/(2n) sum_i ||W_i||^2; returns E
 * and adds the rows that net->accuracy counts correct to *n_correct. */
double mc_mlp_gradients(const mc_mlp *net, const void *X, const void *T, size_t n,
                        int64_t *n_correct);

/* One epoch: the rows order[0:n_order] in consecutive batches of `batch` rows
 * (the last may be smaller); for each batch a forward pass, its loss, the
 * backward pass and one momentum step. The gradient of the batch's E (with the
 * l2 term: dE/dW_i += (l2/B) W_i). With `fold` (classical rule, no weight decay)
 * the step is folded into the weight-gradient products (state = momentum*state -
 * lr*a^T delta as gemm's beta, then state -= lr*(l2/B)*W and w += state in one
 * sweep) and net->grad is unused; otherwise the gradient goes to net->grad and
 * mc_momentum_step applies `hyper`, except for online Nesterov steps (batch 1,
 * rule MC_NESTEROV, no weight decay) on a network whose layers all run as loops at
 * one row, which are folded into the backward pass's loops the same way.
 * Stops before applying a batch whose loss is not finite, after the batch at
 * which net->check (when set) returns nonzero, and, with net->check_rows, before
 * the forward pass of a batch with a row that holds NaN or inf. */
/* Workspaces of the curvature pass, owned by the caller: h and h_below hold
 * [max_batch * max(sizes)] each, squares [max(max_batch * max(sizes),
 * max_i sizes[i]*sizes[i+1])]. */
typedef struct {
    void *h;
    void *h_below;
    void *squares;
} mc_curvature_work;

/* The diagonal Gauss-Newton curvature of E = the mean loss over the n rows of X
 * (n <= max_batch) into curv[P] (Becker & LeCun's second-order back-propagation:
 * each unit's d^2E/dz^2 back-propagated with the off-diagonal terms dropped;
 * c(W[k,j]) = sum_r a[r,k]^2 h[r,j]; see mlp_impl.h for the output layer's h),
 * and, from the same forward pass, dE/dparams into net->grad unless it is NULL.
 * With net->l2, E includes l2/(2n) sum_i ||W_i||^2 and every weight entry (not the
 * biases) of curv its exact curvature l2/n. Returns E and adds the rows net->accuracy
 * counts correct to *n_correct. Cost:
 * the gradient's products once more, on squared activations and weights. */
double mc_mlp_curvature(const mc_mlp *net, const mc_curvature_work *work, const void *X,
                        const void *T, size_t n, void *curv, int64_t *n_correct);

/* Data-parallel training: one process's share of a global batch of `divisor` rows.
 * grad := (1/divisor) sum over the n rows rows[0:n] of X (targets T; n <= max_batch,
 * may be 0) of dloss/dparams, plus (l2/divisor) W_i on the weights, where l2 is
 * given to one process and 0 to the others (net->l2 is not used): the sum of the
 * processes' buffers is dE/dparams of the global batch. Returns the sum of the n
 * per-sample losses; adds the rows net->accuracy counts correct to *n_correct;
 * *squares := sum_i ||W_i||^2 when l2 != 0, else 0. */
double mc_mlp_gradient_share(const mc_mlp *net, const void *X, const void *T,
                             const int64_t *rows, size_t n, size_t divisor, double l2,
                             int64_t *n_correct, double *squares);

mc_fit_result mc_mlp_train_epoch(const mc_mlp *net, const void *X, const void *T,
                                 const int64_t *order, size_t n_order, size_t batch,
                                 const mc_hyper *hyper, int fold);

/* 1 when a step of B rows of net would run on a team: every layer's products on
 * gemm (B*I*O >= MC_GEMM_MIN_MACS, gemm registered) and at least MC_TEAM_MIN_MACS
 * multiply-adds in all; else 0. */
int mc_mlp_team_batch(const mc_mlp *net, size_t B);

/* The threads mc_mlp_train_epoch runs an epoch of batches of `batch` rows on: 1, or
 * nt = mc_get_num_threads() (at most MC_TEAM_MAX) when mc_set_blas_threads registered
 * BLAS's thread control and mc_mlp_team_batch(net, batch). Within such an epoch, a
 * batch for which mc_mlp_team_batch is 0 (a small last one) runs on the calling
 * thread alone. */
int mc_mlp_team_threads(const mc_mlp *net, size_t batch);

#ifdef __cplusplus
}
#endif

#endif
