# Declarations of the C kernels in src_c/momcore_kernels.h.
from libc.stdint cimport int64_t, uint16_t, uint32_t


cdef extern from "momcore_kernels.h" nogil:
    # Only the codes the wrapper needs by name; names map to codes through
    # mc_rule_code and its kin (the lists in the headers).
    ctypedef enum mc_rule:
        MC_CLASSICAL
        MC_N_RULES

    int mc_rule_code(const char *name)

    ctypedef enum mc_dtype:
        MC_FLOAT32
        MC_FLOAT64
        MC_BFLOAT16
        MC_FLOAT16

    size_t mc_dtype_size(int dtype)
    void mc_round_to_half(uint16_t *dst, const float *src, size_t n, int dtype)
    void mc_widen_half(float *dst, const uint16_t *src, size_t n, int dtype)

    ctypedef struct mc_hyper:
        double lr
        double momentum
        double dampening
        double weight_decay
        int rule

    ctypedef struct mc_buffer:
        void *w
        const void *g
        void *s
        size_t n
        int dtype
        const void *p

    int mc_momentum_step(const mc_buffer *buffers, size_t count, const mc_hyper *hyper,
                         int check_finite)
    int mc_momentum_step_threads(const mc_buffer *buffers, size_t count,
                                 const mc_hyper *hyper, int check_finite, int max_threads)
    int mc_momentum_step_each(const mc_buffer *buffers, const mc_hyper *hypers, size_t count,
                              int check_finite)
    int mc_momentum_step_each_threads(const mc_buffer *buffers, const mc_hyper *hypers,
                                      size_t count, int check_finite, int max_threads)
    void mc_set_num_threads(int n)
    int mc_get_num_threads()
    int mc_have_openmp()
    size_t MC_OMP_MIN_ELEMENTS
    int mc_select_isa(const char *name)
    const char *mc_isa_name()
    int mc_isa_supported(const char *name)
    void mc_stream5(const mc_buffer *buffer)
    int mc_all_finite(const void *x, size_t n, int dtype)
    void mc_copy(void *dst, const void *src, size_t bytes, int max_threads)
    void mc_permutation(int64_t *out, uint32_t n, uint32_t (*next32)(void *) noexcept nogil,
                        void *state)


cdef extern from "vmath.h" nogil:
    enum: MC_VMATH_EXP, MC_VMATH_TANH
    const char *mc_vmath_source(int function)

cdef extern from "mlp.h" nogil:
    ctypedef enum mc_activation:
        MC_N_ACTIVATIONS

    ctypedef enum mc_loss:
        MC_N_LOSSES

    ctypedef enum mc_accuracy:
        MC_N_ACCURACIES

    int mc_activation_code(const char *name)
    int mc_loss_code(const char *name)
    int mc_accuracy_code(const char *name)

    size_t MC_GEMM_MIN_MACS

    ctypedef void (*mc_sgemm_t)(char *, char *, int *, int *, int *, float *, float *, int *,
                                float *, int *, float *, float *, int *) noexcept nogil
    ctypedef void (*mc_dgemm_t)(char *, char *, int *, int *, int *, double *, double *,
                                int *, double *, int *, double *, double *, int *) noexcept nogil
    void mc_set_gemm(mc_sgemm_t sgemm, mc_dgemm_t dgemm)
    ctypedef void (*mc_set_threads_t)(int) noexcept nogil
    ctypedef int (*mc_get_threads_t)() noexcept nogil
    void mc_set_blas_threads(mc_set_threads_t set, mc_get_threads_t get)
    void mc_team_after_fork()
    size_t MC_TEAM_MIN_MACS

    ctypedef struct mc_mlp:
        int dtype
        int n_layers
        const int64_t *sizes
        size_t n_params
        int hidden
        int output
        int loss
        int accuracy
        void *params
        void *state
        void *grad
        size_t max_batch
        void **acts
        void *delta
        void *delta_prev
        void *scratch
        int (*check)(void *ctx) noexcept nogil
        void *check_ctx
        size_t check_work
        int check_rows
        double l2

    ctypedef struct mc_fit_result:
        double sum_loss
        double sum_penalty
        int64_t n_correct
        int64_t n_steps
        int stopped
        int interrupted
        int bad_input

    void mc_mlp_predict(const mc_mlp *net, const void *X, size_t n, void *Y)
    double mc_mlp_gradients(const mc_mlp *net, const void *X, const void *T, size_t n,
                            int64_t *n_correct)
    ctypedef struct mc_curvature_work:
        void *h
        void *h_below
        void *squares

    double mc_mlp_curvature(const mc_mlp *net, const mc_curvature_work *work, const void *X,
                            const void *T, size_t n, void *curv, int64_t *n_correct)
    double mc_mlp_gradient_share(const mc_mlp *net, const void *X, const void *T,
                                 const int64_t *rows, size_t n, size_t divisor, double l2,
                                 int64_t *n_correct, double *squares)
    int mc_mlp_team_threads(const mc_mlp *net, size_t batch)
    mc_fit_result mc_mlp_train_epoch(const mc_mlp *net, const void *X, const void *T,
                                     const int64_t *order, size_t n_order, size_t batch,
                                     const mc_hyper *hyper, int fold)
