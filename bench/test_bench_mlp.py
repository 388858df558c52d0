"""pytest-benchmark: the compiled MLP backend against the numpy backend, the minibatch
step against its GEMMs alone, and (when installed) PyTorch and scikit-learn peers."""
from __future__ import annotations

import numpy as np
import pytest

import momcore
from momcore import _bench


@pytest.mark.parametrize("contender", ["c", "numpy"])
@pytest.mark.parametrize("dataset", ["iris", "digits"])
def test_online_epoch(benchmark, record, dataset, contender):
    fn = _bench.mlp_online_contenders(dataset)[contender]
    benchmark.group = f"mlp online epoch {dataset}"
    benchmark(fn)
    record(benchmark, benchmark.group, contender)


@pytest.mark.parametrize("contender", ["c", "gemm_floor", "numpy"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_minibatch_step(benchmark, record, dtype, contender):
    fn = _bench.mlp_minibatch_contenders(dtype)[contender]
    benchmark.group = f"mlp step 784-256-128-10 b128 {np.dtype(dtype).name}"
    benchmark(fn)
    record(benchmark, benchmark.group, contender)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_minibatch_step_torch(benchmark, record, dtype):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(momcore.get_num_threads())
    sizes, B = _bench.MINIBATCH_SIZES, _bench.MINIBATCH_ROWS
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(n_in, n_out, dtype=tdtype))
        if i < len(sizes) - 2:
            layers.append(torch.nn.Sigmoid())
    model = torch.nn.Sequential(*layers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.standard_normal((B, sizes[0])).astype(dtype))
    y = torch.from_numpy(rng.integers(0, sizes[-1], B))
    loss_fn = torch.nn.CrossEntropyLoss()

    def step():
        opt.zero_grad(set_to_none=False)
        loss_fn(model(X), y).backward()
        opt.step()

    benchmark.group = f"mlp step 784-256-128-10 b128 {np.dtype(dtype).name}"
    benchmark(step)
    record(benchmark, benchmark.group, "torch")


def test_online_epoch_sklearn(benchmark, record):
    sklearn_nn = pytest.importorskip("sklearn.neural_network")
    data = momcore.datasets.load_digits()
    X = (data.X - data.X.mean(0)) / np.where(data.X.std(0) > 0, data.X.std(0), 1)
    clf = sklearn_nn.MLPClassifier(hidden_layer_sizes=(128,), activation="logistic",
                                   solver="sgd", batch_size=1, learning_rate_init=0.01,
                                   momentum=0.9, nesterovs_momentum=False, shuffle=True,
                                   random_state=0)
    classes = np.arange(10)
    clf.partial_fit(X, data.y, classes=classes)
    benchmark.group = "mlp online epoch digits"
    benchmark.pedantic(lambda: clf.partial_fit(X, data.y), rounds=3, iterations=1)
    record(benchmark, benchmark.group, "sklearn")


@pytest.mark.parametrize("contender", ["c", "numpy"])
def test_fit_call_iris(benchmark, record, contender):
    fn = _bench.fit_call_contenders("iris")[contender]
    benchmark.group = "fit call iris 4-8-3 online"
    benchmark(fn)
    record(benchmark, benchmark.group, contender)


@pytest.mark.parametrize("contender", ["fit", "epoch"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=lambda d: d.__name__)
def test_fit_call_minibatch(benchmark, record, dtype, contender):
    fn = _bench.fit_call_contenders("minibatch", dtype)[contender]
    benchmark.group = f"fit call 784-256-128-10 b128 {_bench.FIT_ROWS} rows {np.dtype(dtype).name}"
    benchmark(fn)
    record(benchmark, benchmark.group, contender)
