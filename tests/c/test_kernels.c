/*
 * C-level test of the momentum kernel, without Python: reads cases written by the
 * numpy reference (tests/test_c_kernels.py), runs mc_momentum_step on them on every
 * SIMD path this CPU supports, then all of them in one mc_momentum_step_each call per
 * step (each case its own hyperparameters), and compares with the reference's results
 * bit for bit. Prints the largest difference per case; exits 1 on any mismatch.
 *
 * Case file layout (little-endian, native): int32 dtype (an mc_dtype: 0 float32,
 * 1 float64, 2 bfloat16, 3 float16, the 16-bit ones as their bit patterns), int32 rule,
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

/* Element i of a as a double. */
static double element(const void *a, size_t i, int dtype)
{
    float x;
    if (dtype == MC_FLOAT64)
        return ((const double *)a)[i];
    if (dtype == MC_FLOAT32)
        return ((const float *)a)[i];
    mc_widen_half(&x, (const uint16_t *)a + i, 1, dtype);
    return x;
}

static double largest_difference(const void *a, const void *b, size_t n, int dtype)
{
    double worst = 0;
    size_t i;
    for (i = 0; i < n; i++) {
        double x = element(a, i, dtype);
        double y = element(b, i, dtype);
        double d = fabs(x - y);
        if (d > worst || (d != d && worst == worst))
            worst = d;
    }
    return worst;
}

typedef struct {
    const char *path;
    int32_t dtype, rule, steps;
    int64_t n;
    mc_hyper hyper;
    size_t bytes;
    char *w0, *s0, *grads, *w_want, *s_want, *w, *s;
} test_case;

static void free_case(test_case *c)
{
    free(c->w0);
    free(c->s0);
    free(c->grads);
    free(c->w_want);
    free(c->s_want);
    free(c->w);
    free(c->s);
}

/* Reads a case file; 0 on failure. */
static int load_case(const char *path, test_case *c)
{
    FILE *f = fopen(path, "rb");
    double hyper[4];
    int ok;
    memset(c, 0, sizeof *c);
    c->path = path;
    if (f == NULL || !read_exact(f, &c->dtype, 4) || !read_exact(f, &c->rule, 4) ||
        !read_exact(f, &c->steps, 4) || !read_exact(f, &c->n, 8) || !read_exact(f, hyper, 32)) {
        fprintf(stderr, "%s: cannot read header\n", path);
        if (f != NULL)
            fclose(f);
        return 0;
    }
    c->bytes = (size_t)c->n * mc_dtype_size(c->dtype);
    c->w0 = malloc(c->bytes + 1);
    c->s0 = malloc(c->bytes + 1);
    c->grads = malloc(c->bytes * (size_t)c->steps + 1);
    c->w_want = malloc(c->bytes + 1);
    c->s_want = malloc(c->bytes + 1);
    c->w = malloc(c->bytes + 1);
    c->s = malloc(c->bytes + 1);
    ok = c->w0 && c->s0 && c->grads && c->w_want && c->s_want && c->w && c->s &&
         read_exact(f, c->w0, c->bytes) && read_exact(f, c->s0, c->bytes) &&
         read_exact(f, c->grads, c->bytes * (size_t)c->steps) &&
         read_exact(f, c->w_want, c->bytes) && read_exact(f, c->s_want, c->bytes);
    fclose(f);
    if (!ok)
        fprintf(stderr, "%s: truncated\n", path);
    c->hyper.lr = hyper[0];
    c->hyper.momentum = hyper[1];
    c->hyper.dampening = hyper[2];
    c->hyper.weight_decay = hyper[3];
    c->hyper.rule = c->rule;
    return ok;
}

static void reset_case(test_case *c, mc_buffer *b)
{
    memcpy(c->w, c->w0, c->bytes);
    memcpy(c->s, c->s0, c->bytes);
    b->w = c->w;
    b->s = c->s;
    b->n = (size_t)c->n;
    b->dtype = c->dtype;
    b->p = NULL;
}

/* Compares a case's result with the reference's; prints the largest difference. */
static int check_case(const test_case *c, const char *isa, const char *how)
{
    int ok = memcmp(c->w, c->w_want, c->bytes) == 0 && memcmp(c->s, c->s_want, c->bytes) == 0;
    printf("%-40s %-8s %-5s rule %d n %-8lld largest difference: w %g, state %g\n", c->path,
           isa, how, c->rule, (long long)c->n,
           largest_difference(c->w, c->w_want, (size_t)c->n, c->dtype),
           largest_difference(c->s, c->s_want, (size_t)c->n, c->dtype));
    if (!ok)
        printf("  MISMATCH\n");
    return ok;
}

/* One case through mc_momentum_step, step by step. */
static int run_case(test_case *c, const char *isa)
{
    mc_buffer b;
    int32_t t;
    reset_case(c, &b);
    for (t = 0; t < c->steps; t++) {
        b.g = c->grads + (size_t)t * c->bytes;
        mc_momentum_step(&b, 1, &c->hyper, 0);
    }
    return check_case(c, isa, "one");
}

/* All cases in one mc_momentum_step_each call per step, each with its own hyper
 * (cases of another step count than the first count as mismatches); returns the
 * number of mismatches. */
static int run_each(test_case *cases, int count, const char *isa)
{
    mc_buffer *bufs = malloc(sizeof(mc_buffer) * (size_t)count + 1);
    mc_hyper *hypers = malloc(sizeof(mc_hyper) * (size_t)count + 1);
    int i, m = 0, failures = 0;
    int32_t t;
    if (bufs == NULL || hypers == NULL) {
        free(bufs);
        free(hypers);
        return count;
    }
    for (i = 0; i < count; i++)
        if (cases[i].steps == cases[0].steps) {
            reset_case(&cases[i], &bufs[m]);
            hypers[m++] = cases[i].hyper;
        }
    for (t = 0; t < cases[0].steps; t++) {
        for (i = 0, m = 0; i < count; i++)
            if (cases[i].steps == cases[0].steps)
                bufs[m++].g = cases[i].grads + (size_t)t * cases[i].bytes;
        if (mc_momentum_step_each(bufs, hypers, (size_t)m, 1) != 1) {
            printf("mc_momentum_step_each refused finite gradients\n");
            failures = count;
        }
    }
    for (i = 0; i < count; i++)
        failures += cases[i].steps != cases[0].steps || !check_case(&cases[i], isa, "each");
    free(bufs);
    free(hypers);
    return failures;
}

int main(int argc, char **argv)
{
    static const char *paths[] = {"avx512", "avx2", "baseline"};
    test_case *cases = malloc(sizeof(test_case) * (size_t)argc);
    int i, p, failures = 0, runs = 0, loaded = 1;
    if (cases == NULL)
        return 2;
    for (i = 1; i < argc; i++)
        loaded &= load_case(argv[i], &cases[i - 1]);
    for (p = 0; loaded && p < 3; p++) {
        if (mc_select_isa(paths[p]) != 0)
            continue;
        for (i = 0; i < argc - 1; i++) {
            failures += !run_case(&cases[i], paths[p]);
            runs++;
        }
        if (argc > 1) {
            failures += run_each(cases, argc - 1, paths[p]);
            runs += argc - 1;
        }
    }
    for (i = 0; i < argc - 1; i++)
        free_case(&cases[i]);
    free(cases);
    if (!loaded)
        return 2;
    printf("%d passed, %d failed\n", runs - failures, failures);
    return failures != 0;
}
