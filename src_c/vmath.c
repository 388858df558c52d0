/*
 * exp and tanh of vmath.h: the scalar functions, and on x86-64 with glibc their vector
 * variants, which jump to glibc's libmvec when the running glibc has it.
 */
#define MC_VMATH_DEFINE
#include "vmath.h"

#include "glibc_symver.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

double mc_exp(double x) { return exp(x); }
float mc_expf(float x) { return expf(x); }
double mc_tanh(double x) { return tanh(x); }
float mc_tanhf(float x) { return tanhf(x); }

/* What each vmath.h function's vector variants run; written once, at load. */
static const char *mc_vmath_sources[] = {"libm", "libm"};

const char *mc_vmath_source(int function)
{
    if (function != MC_VMATH_EXP && function != MC_VMATH_TANH)
        return NULL;
    return mc_vmath_sources[function];
}

#if MC_VMATH
#include <dlfcn.h>

/* The x86-64 vector function ABI's ISA letters: b SSE2 (128-bit registers), c AVX and
 * d AVX2 (256-bit), e AVX-512 (512-bit). The compiler calls a variant from code built
 * for that ISA, which runs only where the CPU has it (the SIMD paths of simd.h). */
#define MC_ISA_ATTR_b
#define MC_ISA_ATTR_c __attribute__((target("avx")))
#define MC_ISA_ATTR_d __attribute__((target("avx2")))
#define MC_ISA_ATTR_e __attribute__((target("avx512f")))

/* One vector variant of mc_<fn> with n lanes of T for ISA letter isa: the fallback
 * that applies the scalar libm function fn to each lane; the pointer the variant
 * jumps through, to the fallback until libmvec's variant of fn is found; and the
 * variant itself, under the name the compiler calls (_ZGV<isa>N<n>v_mc_<fn>). */
#define MC_VARIANT(isa, n, T, fn)                                                        \
    typedef T mc_vec_##isa##n##fn __attribute__((vector_size(sizeof(T) * (n))));         \
    MC_ISA_ATTR_##isa static mc_vec_##isa##n##fn mc_lanes_##isa##n##fn(                   \
        mc_vec_##isa##n##fn x)                                                           \
    {                                                                                    \
        int i;                                                                           \
        for (i = 0; i < (n); i++)                                                        \
            x[i] = fn(x[i]);                                                             \
        return x;                                                                        \
    }                                                                                    \
    static mc_vec_##isa##n##fn (*mc_via_##isa##n##fn)(mc_vec_##isa##n##fn) =             \
        mc_lanes_##isa##n##fn;                                                           \
    MC_VMATH_LOCAL MC_ISA_ATTR_##isa mc_vec_##isa##n##fn _ZGV##isa##N##n##v_mc_##fn(      \
        mc_vec_##isa##n##fn x);                                                          \
    MC_VMATH_LOCAL MC_ISA_ATTR_##isa mc_vec_##isa##n##fn _ZGV##isa##N##n##v_mc_##fn(      \
        mc_vec_##isa##n##fn x)                                                           \
    {                                                                                    \
        return mc_via_##isa##n##fn(x);                                                   \
    }

/* Each function's variants for all four ISAs, in double and in float. */
#define MC_FAMILY(X, fn, fnf)                                                            \
    X(b, 2, double, fn) X(b, 4, float, fnf)                                              \
    X(c, 4, double, fn) X(c, 8, float, fnf)                                              \
    X(d, 4, double, fn) X(d, 8, float, fnf)                                              \
    X(e, 8, double, fn) X(e, 16, float, fnf)

MC_FAMILY(MC_VARIANT, exp, expf)
MC_FAMILY(MC_VARIANT, tanh, tanhf)

/* libmvec's name of a variant, and the pointer that is to jump to it. */
typedef struct {
    const char *name;
    void *via; /* the address of an mc_via_* pointer */
} mc_vmath_slot;

#define MC_SLOT(isa, n, T, fn) {"_ZGV" #isa "N" #n "v_" #fn, (void *)&mc_via_##isa##n##fn},

static const mc_vmath_slot mc_exp_slots[] = {MC_FAMILY(MC_SLOT, exp, expf)};
static const mc_vmath_slot mc_tanh_slots[] = {MC_FAMILY(MC_SLOT, tanh, tanhf)};
#define MC_N_SLOTS (sizeof mc_exp_slots / sizeof mc_exp_slots[0])

/* Points a function's variants at libmvec's if libmvec has all of them (all arrived
 * in the same glibc release); otherwise leaves them on the fallback. */
static int mc_vmath_take(void *libmvec, const mc_vmath_slot *slots)
{
    void *found[MC_N_SLOTS];
    size_t i;
    for (i = 0; i < MC_N_SLOTS; i++) {
        found[i] = dlsym(libmvec, slots[i].name);
        if (found[i] == NULL)
            return 0;
    }
    /* POSIX: a function pointer and void * have the same representation. */
    for (i = 0; i < MC_N_SLOTS; i++)
        memcpy(slots[i].via, &found[i], sizeof found[i]);
    return 1;
}

/* Runs once, while the dynamic loader loads the extension: before any of its code
 * can run, in whichever thread imports it, so the pointers need no lock. The
 * environment variable MOMCORE_NO_LIBMVEC (set and not "0") keeps the fallback. */
__attribute__((constructor)) static void mc_vmath_init(void)
{
    const char *off = getenv("MOMCORE_NO_LIBMVEC");
    void *libmvec;
    if (off != NULL && off[0] != '\0' && strcmp(off, "0") != 0)
        return;
    libmvec = dlopen("libmvec.so.1", RTLD_NOW | RTLD_LOCAL);
    if (libmvec == NULL)
        return; /* kept open while found: its functions are called until exit */
    if (mc_vmath_take(libmvec, mc_exp_slots))
        mc_vmath_sources[MC_VMATH_EXP] = "libmvec";
    if (mc_vmath_take(libmvec, mc_tanh_slots))
        mc_vmath_sources[MC_VMATH_TANH] = "libmvec";
}
#endif
