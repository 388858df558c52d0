# Declarations of the C kernels in src_c/momcore_kernels.h.

cdef extern from "momcore_kernels.h" nogil:
    ctypedef enum mc_rule:
        MC_CLASSICAL
        MC_NESTEROV
        MC_VELOCITY
        MC_EMA
        MC_ONE_STEP

    ctypedef enum mc_dtype:
        MC_FLOAT32
        MC_FLOAT64

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

    int mc_momentum_step(const mc_buffer *buffers, size_t count, const mc_hyper *hyper,
                         int check_finite)
    int mc_all_finite(const mc_buffer *buffers, size_t count)
    void mc_set_num_threads(int n)
    int mc_get_num_threads()
    int mc_have_openmp()
    size_t MC_OMP_MIN_ELEMENTS
    int mc_select_isa(const char *name)
    const char *mc_isa_name()
    int mc_isa_supported(const char *name)
    void mc_stream5(const mc_buffer *buffer)
