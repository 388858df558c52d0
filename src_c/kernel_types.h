/* kernel_impl.h for float and double on the SIMD path MC_ISA (see simd.h), and the
 * 16-bit storage formats on top of the float one (kernel_half.h). */
#define MC_TARGET MC_TARGET_OF(MC_ISA)

#define MC_T float
#define MC_BITS uint32_t
#define MC_EXPMASK UINT32_C(0x7f800000)
#define MC_NAME(x) MC_CAT3(x, f32, MC_ISA)
#include "kernel_impl.h"
#undef MC_T
#undef MC_BITS
#undef MC_EXPMASK
#undef MC_NAME

#define MC_T double
#define MC_BITS uint64_t
#define MC_EXPMASK UINT64_C(0x7ff0000000000000)
#define MC_NAME(x) MC_CAT3(x, f64, MC_ISA)
#include "kernel_impl.h"
#undef MC_T
#undef MC_BITS
#undef MC_EXPMASK
#undef MC_NAME

/* bfloat16 and float16 storage, computed in float32 (the loop above) */
#include "kernel_half.h"

#undef MC_TARGET
