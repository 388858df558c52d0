/*
 * C-level test of the curvature pass (mc_mlp_curvature), without Python, on every SIMD
 * path this CPU supports:
 *
 * 1. By hand: a single linear layer [3 -> 1] with squared error, E = 1/(2n) sum_r
 *    (w.x_r + b - t_r)^2 + l2/(2n) ||w||^2, has d^2E/dw_k^2 = mean_r x_rk^2 + l2/n and
 *    d^2E/db^2 = 1, whatever w, b and t.
 * 2. By finite differences: a [3 -> 4 -> 2] network with identity units and squared
 *    error (where the Gauss-Newton diagonal equals the exact Hessian diagonal), with and
 *    without l2, against central differences of mc_mlp_gradients.
 * 3. The output layer of a [3 -> 4 -> 3] tanh/softmax/cross-entropy network (exact there
 *    for the canonical link) against central differences, and every entry >= 0.
 *
 * Prints one line per check and "N passed, M failed"; exits 1 on any failure.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlp.h"

#define MAX_P 64
#define MAX_ROWS 8
#define MAX_UNITS 4

typedef struct {
    mc_mlp net;
    int64_t sizes[4];
    double params[MAX_P], state[MAX_P], grad[MAX_P];
    double acts_buf[4][MAX_ROWS * MAX_UNITS];
    void *acts[4];
    double delta[MAX_ROWS * MAX_UNITS], delta_prev[MAX_ROWS * MAX_UNITS];
    double scratch[MAX_UNITS];
    double h[MAX_ROWS * MAX_UNITS], h_below[MAX_ROWS * MAX_UNITS];
    double squares[MAX_ROWS * MAX_UNITS + MAX_UNITS * MAX_UNITS];
    mc_curvature_work work;
} tiny_net;

static int passed = 0, failed = 0;

/* A deterministic value in [-1, 1). */
static double draw(unsigned *seed)
{
    *seed = *seed * 1103515245u + 12345u;
    return (double)((*seed >> 8) & 0xffff) / 32768.0 - 1.0;
}

static void make_net(tiny_net *t, int n_layers, const int64_t *sizes, int hidden, int output,
                     int loss, double l2, unsigned seed)
{
    size_t p = 0;
    int i;
    memset(t, 0, sizeof *t);
    for (i = 0; i <= n_layers; i++)
        t->sizes[i] = sizes[i];
    for (i = 0; i < n_layers; i++)
        p += (size_t)(sizes[i] * sizes[i + 1] + sizes[i + 1]);
    for (i = 0; i <= n_layers; i++)
        t->acts[i] = t->acts_buf[i];
    for (i = 0; i < (int)p; i++)
        t->params[i] = 0.7 * draw(&seed);
    t->net.dtype = MC_FLOAT64;
    t->net.n_layers = n_layers;
    t->net.sizes = t->sizes;
    t->net.n_params = p;
    t->net.hidden = hidden;
    t->net.output = output;
    t->net.loss = loss;
    t->net.accuracy = MC_ACC_NONE;
    t->net.params = t->params;
    t->net.state = t->state;
    t->net.grad = t->grad;
    t->net.max_batch = MAX_ROWS;
    t->net.acts = t->acts;
    t->net.delta = t->delta;
    t->net.delta_prev = t->delta_prev;
    t->net.scratch = t->scratch;
    t->net.l2 = l2;
    t->work.h = t->h;
    t->work.h_below = t->h_below;
    t->work.squares = t->squares;
}

static void check(const char *what, double got, double want, double tol)
{
    const double err = fabs(got - want);
    if (!(err <= tol * (1.0 + fabs(want)))) {
        printf("FAIL %s: got %.12g, want %.12g\n", what, got, want);
        failed++;
    } else {
        passed++;
    }
}

/* d^2E/dp_i^2 by central differences of the gradient. */
static double exact_diagonal(tiny_net *t, const double *X, const double *T, size_t n,
                             size_t i)
{
    const double eps = 1e-5, old = t->params[i];
    double plus;
    int64_t correct = 0;
    t->params[i] = old + eps;
    mc_mlp_gradients(&t->net, X, T, n, &correct);
    plus = t->grad[i];
    t->params[i] = old - eps;
    mc_mlp_gradients(&t->net, X, T, n, &correct);
    t->params[i] = old;
    return (plus - t->grad[i]) / (2 * eps);
}

static void by_hand(const char *isa)
{
    const int64_t sizes[2] = {3, 1};
    const size_t n = 5;
    double X[5 * 3], T[5], curv[4], want;
    unsigned seed = 11;
    tiny_net t;
    int64_t correct = 0;
    size_t r, k;
    char what[96];
    for (r = 0; r < n * 3; r++)
        X[r] = 2 * draw(&seed);
    for (r = 0; r < n; r++)
        T[r] = draw(&seed);
    make_net(&t, 1, sizes, MC_IDENTITY, MC_IDENTITY, MC_SQUARED_ERROR, 0.3, 5);
    mc_mlp_curvature(&t.net, &t.work, X, T, n, curv, &correct);
    for (k = 0; k < 3; k++) {
        want = 0.3 / (double)n;
        for (r = 0; r < n; r++)
            want += X[r * 3 + k] * X[r * 3 + k] / (double)n;
        snprintf(what, sizeof what, "%s by hand: c(w_%zu)", isa, k);
        check(what, curv[k], want, 1e-13);
    }
    snprintf(what, sizeof what, "%s by hand: c(b)", isa);
    check(what, curv[3], 1.0, 1e-13);
}

static void against_differences(const char *isa, int hidden, int output, int loss,
                                double l2, size_t first, const char *name)
{
    const int64_t sizes[3] = {3, 4, output == MC_SOFTMAX ? 3 : 2};
    const size_t n = 6, O = (size_t)sizes[2];
    double X[6 * 3], T[6 * 3], curv[MAX_P], worst = 0, scale = 0;
    unsigned seed = 23;
    tiny_net t;
    int64_t correct = 0;
    size_t r, i;
    char what[128];
    for (r = 0; r < n * 3; r++)
        X[r] = draw(&seed);
    for (r = 0; r < n; r++)
        for (i = 0; i < O; i++)
            T[r * O + i] = output == MC_SOFTMAX ? (double)(i == r % O) : draw(&seed);
    make_net(&t, 2, sizes, hidden, output, loss, l2, 9);
    mc_mlp_curvature(&t.net, &t.work, X, T, n, curv, &correct);
    for (i = 0; i < t.net.n_params; i++) {
        if (curv[i] < 0) {
            printf("FAIL %s %s: c[%zu] = %g < 0\n", isa, name, i, curv[i]);
            failed++;
            return;
        }
    }
    for (i = first; i < t.net.n_params; i++) {
        const double exact = exact_diagonal(&t, X, T, n, i);
        worst = fmax(worst, fabs(curv[i] - exact));
        scale = fmax(scale, fabs(exact));
    }
    snprintf(what, sizeof what, "%s %s: largest |curvature - finite difference| / scale", isa,
             name);
    printf("%s = %.2e\n", what, worst / scale);
    check(what, worst / scale, 0.0, 1e-6);
}

int main(void)
{
    static const char *paths[] = {"avx512", "avx2", "baseline"};
    size_t k;
    for (k = 0; k < sizeof paths / sizeof paths[0]; k++) {
        if (!mc_isa_supported(paths[k]))
            continue;
        mc_select_isa(paths[k]);
        by_hand(paths[k]);
        against_differences(paths[k], MC_IDENTITY, MC_IDENTITY, MC_SQUARED_ERROR, 0.0, 0,
                            "linear [3,4,2]");
        against_differences(paths[k], MC_IDENTITY, MC_IDENTITY, MC_SQUARED_ERROR, 0.4, 0,
                            "linear [3,4,2] with l2");
        against_differences(paths[k], MC_TANH, MC_SOFTMAX, MC_CROSS_ENTROPY, 0.2, 3 * 4 + 4,
                            "tanh/softmax [3,4,3] output layer with l2");
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
