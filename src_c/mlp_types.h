/* mlp_impl.h for float and double on the SIMD path MC_ISA (see simd.h). */
#define MC_TARGET MC_TARGET_OF(MC_ISA)

#define MC_T float
#define MC_DTYPE MC_FLOAT32
#define MC_NAME(x) MC_CAT3(x, f32, MC_ISA)
#define MC_GEMM mc_sgemm
#define MC_MATH_EXP mc_expf
#define MC_MATH_LOG logf
#define MC_MATH_TANH mc_tanhf
#define MC_MATH_FABS fabsf
#define MC_TINY FLT_MIN
#include "mlp_impl.h"
#undef MC_T
#undef MC_DTYPE
#undef MC_NAME
#undef MC_GEMM
#undef MC_MATH_EXP
#undef MC_MATH_LOG
#undef MC_MATH_TANH
#undef MC_MATH_FABS
#undef MC_TINY

#define MC_T double
#define MC_DTYPE MC_FLOAT64
#define MC_NAME(x) MC_CAT3(x, f64, MC_ISA)
#define MC_GEMM mc_dgemm
#define MC_MATH_EXP mc_exp
#define MC_MATH_LOG log
#define MC_MATH_TANH mc_tanh
#define MC_MATH_FABS fabs
#define MC_TINY DBL_MIN
#include "mlp_impl.h"
#undef MC_T
#undef MC_DTYPE
#undef MC_NAME
#undef MC_GEMM
#undef MC_MATH_EXP
#undef MC_MATH_LOG
#undef MC_MATH_TANH
#undef MC_MATH_FABS
#undef MC_TINY

#undef MC_TARGET
