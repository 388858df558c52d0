/* Includes the header named by MC_INSTANTIATE once per SIMD path (see simd.h),
 * with MC_ISA set to the path. */
#define MC_ISA baseline
#include MC_INSTANTIATE
#undef MC_ISA

#if MC_X86
#define MC_ISA avx2
#include MC_INSTANTIATE
#undef MC_ISA

#define MC_ISA avx512
#include MC_INSTANTIATE
#undef MC_ISA
#endif
