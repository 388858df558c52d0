"""Time the MLP passes of several builds of momcore against each other, in one run.

Usage::

    python tools/compare_builds.py NAME=DIR[:VAR=VALUE...] NAME=DIR... [--rounds N]

Each DIR holds a built ``momcore`` package (e.g. a source tree after ``setup.py
build_ext --inplace``); VAR=VALUE pairs are set in that contender's environment (e.g.
``MOMCORE_NO_LIBMVEC=1``). Every contender runs in its own process, all started at once
and kept waiting on stdin; the contenders then take turns, case by case, round after
round (their order reversed every other round), and the best time of each counts, so
that drift of a shared machine touches all of them alike. One thread each (OpenMP and
BLAS), since the vector math under test runs per thread.

Cases (tanh hidden layers, softmax output, float64 unless marked): the forward pass
(predict) and forward + backward pass (gradients) of 64-128-10 and 784-256-128-10 on
128 rows, and one online epoch (batch 1) of 64-128-10 on the digits data with tanh and
with sigmoid hidden units.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

WORKER = r"""
import json, sys, timeit
import numpy as np
from momcore import _core, _network, datasets

rng = np.random.default_rng(0)
cases = {}

def passes(sizes, dtype, rows=128):
    X = rng.standard_normal((rows, sizes[0])).astype(dtype)
    T = _network.encode_targets(rng.integers(0, sizes[-1], rows), sizes[-1], "softmax", dtype)
    params = np.empty(_network.n_params(sizes), dtype)
    _network.init_params(params, sizes, "tanh", np.random.default_rng(0))
    core = _core.NetCore(params, np.zeros_like(params), np.zeros_like(params), sizes, "tanh",
                         "softmax", rows)
    out = np.empty((rows, sizes[-1]), dtype)
    return (lambda: core.predict(X, out)), (lambda: core.gradients(X, T))

def online(hidden):
    data = datasets.load_digits()
    X = (data.X - data.X.mean(0)) / np.where(data.X.std(0) > 0, data.X.std(0), 1.0)
    X = np.ascontiguousarray(X)
    sizes = [64, 128, 10]
    T = _network.encode_targets(data.y, sizes[-1], "softmax", np.float64)
    order = np.random.default_rng(0).permutation(X.shape[0])
    params = np.empty(_network.n_params(sizes))
    _network.init_params(params, sizes, hidden, np.random.default_rng(0))
    core = _core.NetCore(params, np.zeros_like(params), None, sizes, hidden, "softmax", 1)
    return lambda: core.train_epoch(X, T, order, 1, lr=0.001, momentum=0.9)

for sizes, dt, tag in (([64, 128, 10], np.float64, "64-128-10"),
                       ([784, 256, 128, 10], np.float32, "784-256-128-10 f32"),
                       ([784, 256, 128, 10], np.float64, "784-256-128-10")):
    fwd, both = passes(sizes, dt)
    cases[f"forward {tag} b128 tanh"] = fwd
    cases[f"forward+backward {tag} b128 tanh"] = both
cases["online epoch digits 64-128-10 tanh"] = online("tanh")
cases["online epoch digits 64-128-10 sigmoid"] = online("sigmoid")
_core.set_num_threads(1)
vmath = _core.vector_math() if hasattr(_core, "vector_math") else "(not reported)"
print(json.dumps({"cases": list(cases), "vector_math": vmath,
                  "simd": _core.simd_path()}), flush=True)
for line in sys.stdin:
    name, number = json.loads(line)
    fn = cases[name]
    if number == 0:  # calibrate: calls for about 20 ms
        fn()
        number = 1
        while (t := timeit.timeit(fn, number=number)) < 0.02:
            number *= 2
        print(json.dumps(number), flush=True)
    else:
        print(json.dumps(timeit.timeit(fn, number=number) / number), flush=True)
"""


def start(spec: str) -> tuple[str, subprocess.Popen, dict]:
    name, _, rest = spec.partition("=")
    directory, *assignments = rest.split(":")
    env = dict(os.environ, PYTHONPATH=os.path.abspath(directory), OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop("MOMCORE_NO_LIBMVEC", None)
    for a in assignments:
        key, _, value = a.partition("=")
        env[key] = value
    proc = subprocess.Popen([sys.executable, "-c", WORKER], env=env, cwd="/",
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    info = json.loads(proc.stdout.readline())
    return name, proc, info


def ask(proc: subprocess.Popen, case: str, number: int):
    proc.stdin.write(json.dumps([case, number]) + "\n")
    proc.stdin.flush()
    return json.loads(proc.stdout.readline())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("contenders", nargs="+", help="NAME=DIR[:VAR=VALUE...]")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--settle", type=float, default=0.05,
                        help="seconds idle before each timed turn")
    args = parser.parse_args()
    workers = [start(spec) for spec in args.contenders]
    cases = workers[0][2]["cases"]
    for name, _, info in workers:
        print(f"{name}: SIMD {info['simd']}, vector math {info['vector_math']}")
    numbers = {case: ask(workers[0][1], case, 0) for case in cases}
    best = {(w[0], case): float("inf") for w in workers for case in cases}
    for r in range(args.rounds):
        for case in cases:
            order = workers if r % 2 == 0 else workers[::-1]
            for name, proc, _ in order:
                time.sleep(args.settle)
                best[name, case] = min(best[name, case], ask(proc, case, numbers[case]))
    for _, proc, _ in workers:
        proc.stdin.close()
        proc.wait()
    first = workers[0][0]
    columns = [(f"{w[0]} ms", lambda case, w=w: f"{best[w[0], case] * 1e3:.4f}")
               for w in workers]
    columns += [(f"{w[0]}/{first}",
                 lambda case, w=w: f"{best[w[0], case] / best[first, case]:.3f}")
                for w in workers[1:]]
    widths = [max(len(title), 8) + 2 for title, _ in columns]
    head = f"{'case':<46}" + "".join(f"{t:>{n}}" for (t, _), n in zip(columns, widths))
    print(head)
    print("-" * len(head))
    for case in cases:
        print(f"{case:<46}" + "".join(f"{cell(case):>{n}}"
                                      for (_, cell), n in zip(columns, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
