/*
 * C-level test of the momentum kernel, without Python: reads cases written by the
 * numpy reference (tests/test_c_kernels.py), runs mc_momentum_step on them on every
 * SIMD path this CPU supports, and compares with the reference's results bit for
 * bit. Prints the largest difference per case; exits 1 on any mismatch.
 *
 * Case file layout (little-endian, native): int32 dtype (0 f32, 1 f64), int32 rule,
 * int32 steps, int64 n, float64 lr, momentum, dampening, weight_decay; then w0[n],
 * state0[n], g[steps][n], w_expected[n], state_expected[n], in the dtype.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "momcore_kernels.h"

static int read_exact(FILE *f, void *dst, size_t bytes)
{
    return fread(dst, 1, bytes, f) == bytes;
}

static double largest_difference(const void *a, const void *b, size_t n, int dtype)
{
    double worst = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double x = dtype == MC_FLOAT32 ? ((const float *)a)[i] : ((const double *)a)[i];
        double y = dtype == MC_FLOAT32 ? ((const float *)b)[i] : ((const double *)b)[i];
        double d = fabs(x - y);
        if (d > worst || (d != d && worst == worst))
            worst = d;
    }
    return worst;
}

static int run_case(const char *path, const char *isa)
{
    FILE *f = fopen(path, "rb");
    int32_t dtype, rule, steps;
    int64_t n;
    double hyper[4];
    size_t width, bytes;
    char *w0, *s0, *grads, *w_want, *s_want, *w, *s;
    mc_hyper h;
    mc_buffer b;
    int32_t t;
    int ok;
    if (f == NULL || !read_exact(f, &dtype, 4) || !read_exact(f, &rule, 4) ||
        !read_exact(f, &steps, 4) || !read_exact(f, &n, 8) || !read_exact(f, hyper, 32)) {
        fprintf(stderr, "%s: cannot read header\n", path);
        return 0;
    }
    width = dtype == MC_FLOAT32 ? 4 : 8;
    bytes = (size_t)n * width;
    w0 = malloc(bytes + 1);
    s0 = malloc(bytes + 1);
    grads = malloc(bytes * (size_t)steps + 1);
    w_want = malloc(bytes + 1);
    s_want = malloc(bytes + 1);
    w = malloc(bytes + 1);
    s = malloc(bytes + 1);
    ok = w0 && s0 && grads && w_want && s_want && w && s && read_exact(f, w0, bytes) &&
         read_exact(f, s0, bytes) && read_exact(f, grads, bytes * (size_t)steps) &&
         read_exact(f, w_want, bytes) && read_exact(f, s_want, bytes);
    fclose(f);
    if (ok) {
        memcpy(w, w0, bytes);
        memcpy(s, s0, bytes);
        h.lr = hyper[0];
        h.momentum = hyper[1];
        h.dampening = hyper[2];
        h.weight_decay = hyper[3];
        h.rule = rule;
        b.w = w;
        b.s = s;
        b.n = (size_t)n;
        b.dtype = dtype;
        for (t = 0; t < steps; t++) {
            b.g = grads + (size_t)t * bytes;
            mc_momentum_step(&b, 1, &h, 0);
        }
        printf("%-40s %-8s rule %d n %-8lld largest difference: w %g, state %g\n", path, isa,
               rule, (long long)n, largest_difference(w, w_want, (size_t)n, dtype),
               largest_difference(s, s_want, (size_t)n, dtype));
        ok = memcmp(w, w_want, bytes) == 0 && memcmp(s, s_want, bytes) == 0;
        if (!ok)
            printf("  MISMATCH\n");
    } else {
        fprintf(stderr, "%s: truncated\n", path);
    }
    free(w0);
    free(s0);
    free(grads);
    free(w_want);
    free(s_want);
    free(w);
    free(s);
    return ok;
}

int main(int argc, char **argv)
{
    static const char *paths[] = {"avx512", "avx2", "baseline"};
    int i, p, failures = 0, runs = 0;
    for (p = 0; p < 3; p++) {
        if (mc_select_isa(paths[p]) != 0)
            continue;
        for (i = 1; i < argc; i++) {
            failures += !run_case(argv[i], paths[p]);
            runs++;
        }
    }
    printf("%d passed, %d failed\n", runs - failures, failures);
    return failures != 0;
}
