"""momcore.MLPClassifier / MLPRegressor: numerical equivalence with scikit-learn's
MLPs, the behaviours of scikit-learn's own neural_network/tests/test_mlp.py, and what a
user swapping one import relies on (pipelines, search, pickling, pandas, joblib)."""
import pickle
import warnings

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn", reason="the scikit-learn estimators need "
                              "scikit-learn")
from sklearn import neural_network  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, load_iris, make_multilabel_classification, make_regression  # noqa: E402,E501
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import MinMaxScaler, StandardScaler  # noqa: E402

import momcore  # noqa: E402
from momcore.sklearn import MLPClassifier, MLPRegressor, init_layer  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

RTOL = 1e-9  # float64, after several epochs

_digits = load_digits()
X_DIGITS = MinMaxScaler().fit_transform(_digits.data[:400])
y_DIGITS = _digits.target[:400]
_iris = load_iris()
X_IRIS = StandardScaler().fit_transform(_iris.data)
y_IRIS = _iris.target
X_REG, y_REG = make_regression(n_samples=200, n_features=10, n_targets=2, noise=0.1,
                               random_state=0)
X_REG = StandardScaler().fit_transform(X_REG)
y_REG = y_REG / np.abs(y_REG).max()


def _pair(cls_momcore, cls_sklearn, **params):
    return cls_momcore(**params), cls_sklearn(solver="sgd", **params)


def _assert_same_fit(ours, theirs, rtol=RTOL):
    for mine, their in zip(ours.coefs_ + ours.intercepts_,
                           theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(mine, their, rtol=rtol, atol=rtol * np.abs(their).max())
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=rtol)
    assert ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
    np.testing.assert_allclose(ours.loss_, theirs.loss_, rtol=rtol)


# ---- the same network as scikit-learn's --------------------------------------------


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
def test_initial_weights_are_scikit_learns(activation):
    theirs = neural_network.MLPClassifier(activation=activation)
    a, b = np.random.RandomState(3), np.random.RandomState(3)
    for fan_in, fan_out in ((64, 20), (20, 10)):
        W, bias = init_layer(a, fan_in, fan_out, activation)
        theirs._random_state = b
        W_theirs, b_theirs = theirs._init_coef(fan_in, fan_out, np.float64)
        np.testing.assert_array_equal(W, W_theirs)
        np.testing.assert_array_equal(bias, b_theirs)


@pytest.mark.parametrize("learning_rate", ["constant", "invscaling"])
@pytest.mark.parametrize("nesterovs_momentum", [False, True])
@pytest.mark.parametrize("alpha", [0.0, 1e-3])
def test_classifier_matches_scikit_learn(alpha, nesterovs_momentum, learning_rate):
    params = dict(hidden_layer_sizes=(30, 20), alpha=alpha, batch_size=64,
                  learning_rate=learning_rate, learning_rate_init=0.2 if
                  learning_rate == "invscaling" else 0.05, momentum=0.9,
                  nesterovs_momentum=nesterovs_momentum, max_iter=8, tol=0.0,
                  shuffle=False, random_state=7)
    ours, theirs = _pair(MLPClassifier, neural_network.MLPClassifier, **params)
    ours.fit(X_DIGITS, y_DIGITS)
    theirs.fit(X_DIGITS, y_DIGITS)
    _assert_same_fit(ours, theirs)
    np.testing.assert_allclose(ours.predict_proba(X_DIGITS), theirs.predict_proba(X_DIGITS),
                               rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("case", ["shuffle", "early_stopping", "adaptive", "binary",
                                  "multilabel", "sample_weight", "online"])
def test_classifier_matches_scikit_learn_beyond_the_issue(case):
    """Same random_state gives the same shuffling and validation split too."""
    X, y = X_DIGITS, y_DIGITS
    params = dict(hidden_layer_sizes=(16,), batch_size=50, learning_rate_init=0.05,
                  max_iter=12, random_state=1, alpha=1e-4)
    fit = {}
    if case == "early_stopping":
        params.update(early_stopping=True, validation_fraction=0.2, n_iter_no_change=2,
                      tol=0.05)
    if case == "adaptive":
        params.update(learning_rate="adaptive", n_iter_no_change=1, tol=0.05, max_iter=20)
    if case == "binary":
        y = np.where(y < 5, "low", "high")
    if case == "multilabel":
        X, y = make_multilabel_classification(n_samples=150, n_features=10, random_state=0)
    if case == "sample_weight":
        fit["sample_weight"] = np.random.default_rng(0).uniform(0.1, 3, size=len(y))
    if case == "online":
        X, y = X[:60], y[:60]
        params.update(batch_size=1, alpha=0.0, max_iter=3)
    ours, theirs = _pair(MLPClassifier, neural_network.MLPClassifier, **params)
    ours.fit(X, y, **fit)
    theirs.fit(X, y, **fit)
    _assert_same_fit(ours, theirs)
    if case == "early_stopping":
        np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_)
        assert ours.best_validation_score_ == theirs.best_validation_score_
    np.testing.assert_array_equal(ours.predict(X), theirs.predict(X))


@pytest.mark.parametrize("alpha", [0.0, 1e-2])
def test_regressor_matches_scikit_learn(alpha):
    params = dict(hidden_layer_sizes=(12,), activation="tanh", alpha=alpha, batch_size=32,
                  learning_rate_init=0.01, max_iter=6, tol=0.0, random_state=2)
    ours, theirs = _pair(MLPRegressor, neural_network.MLPRegressor, **params)
    ours.fit(X_REG, y_REG)
    theirs.fit(X_REG, y_REG)
    _assert_same_fit(ours, theirs)  # the loss averaged over the two outputs, as theirs
    np.testing.assert_allclose(ours.predict(X_REG), theirs.predict(X_REG), rtol=RTOL,
                               atol=1e-12)


@pytest.mark.parametrize("backend", ["c", "numpy"])
@pytest.mark.parametrize("case", ["online", "b200", "regressor"])
def test_l2_in_the_whole_epoch_matches_scikit_learn(monkeypatch, case, backend):
    """alpha > 0 without sample weights: the compiled whole-epoch path (its L2 term in
    the backward pass, folded with nesterovs_momentum=False), equal to scikit-learn's."""
    from momcore import sklearn as ours_module
    runners = []
    original = ours_module._Trainer.runner

    def spy(self, *args, **kwargs):
        runners.append(original(self, *args, **kwargs))
        return runners[-1]

    monkeypatch.setattr(ours_module._Trainer, "runner", spy)
    params = dict(hidden_layer_sizes=(30,), alpha=1e-2, learning_rate_init=0.05,
                  max_iter=3, tol=0.0, random_state=3, nesterovs_momentum=False)
    X, y, cls = X_DIGITS, y_DIGITS, (MLPClassifier, neural_network.MLPClassifier)
    if case == "online":
        X, y = X[:80], y[:80]
        params.update(batch_size=1)
    if case == "b200":
        params.update(batch_size=200, hidden_layer_sizes=(100,))  # gemm on both layers
    if case == "regressor":
        X, y, cls = X_REG, y_REG, (MLPRegressor, neural_network.MLPRegressor)
        params.update(batch_size=32)
    ours, theirs = _pair(*cls, **params)
    ours.set_params(backend=backend)
    ours.fit(X, y)
    theirs.fit(X, y)
    _assert_same_fit(ours, theirs)
    whole = backend == "c" or case != "regressor"
    assert isinstance(runners[-1], ours_module._WholeEpochRunner) == whole


def test_changed_alpha_reaches_the_network():
    params = dict(hidden_layer_sizes=(10,), learning_rate_init=0.05, max_iter=2, tol=0.0,
                  random_state=0, warm_start=True)
    ours, theirs = _pair(MLPClassifier, neural_network.MLPClassifier, alpha=0.0, **params)
    for alpha in (0.0, 0.5):
        ours.set_params(alpha=alpha)
        theirs.set_params(alpha=alpha)
        ours.fit(X_DIGITS, y_DIGITS)
        theirs.fit(X_DIGITS, y_DIGITS)
    _assert_same_fit(ours, theirs)


def test_partial_fit_matches_scikit_learn():
    params = dict(hidden_layer_sizes=(10,), learning_rate="invscaling",
                  learning_rate_init=0.3, random_state=0, batch_size=40)
    ours, theirs = _pair(MLPClassifier, neural_network.MLPClassifier, **params)
    classes = np.unique(y_DIGITS)
    for start in range(0, 400, 100):
        ours.partial_fit(X_DIGITS[start:start + 100], y_DIGITS[start:start + 100], classes=classes)
        theirs.partial_fit(X_DIGITS[start:start + 100], y_DIGITS[start:start + 100], classes=classes)
    _assert_same_fit(ours, theirs)


# ---- behaviours of scikit-learn's test_mlp.py --------------------------------------


@pytest.mark.parametrize("activation", ["logistic", "tanh", "relu"])
def test_learns_iris_and_digits(activation):
    for X, y in ((X_IRIS, y_IRIS), (X_DIGITS, y_DIGITS)):
        clf = MLPClassifier(hidden_layer_sizes=(50,), activation=activation,
                            learning_rate_init=0.2, max_iter=150, random_state=1)
        clf.fit(X, y)
        assert clf.score(X, y) > 0.95
        assert clf.out_activation_ == "softmax"
        assert clf.predict_proba(X).shape == (len(y), len(np.unique(y)))


def test_binary_with_any_labels():
    y = np.where(y_IRIS == 0, "setosa", "other")
    clf = MLPClassifier(hidden_layer_sizes=(5,), learning_rate_init=0.1, random_state=0)
    clf.fit(X_IRIS, y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == 1
    assert list(clf.classes_) == ["other", "setosa"]
    assert clf.score(X_IRIS, y) == 1.0
    proba = clf.predict_proba(X_IRIS)
    assert proba.shape == (150, 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1)
    np.testing.assert_allclose(clf.predict_log_proba(X_IRIS), np.log(proba))
    for labels in ([True, False], [1, 2]):
        yy = np.where(y_IRIS == 0, *labels)
        assert set(clone(clf).fit(X_IRIS, yy).predict(X_IRIS)) == set(labels)


def test_multilabel():
    X, Y = make_multilabel_classification(n_samples=50, random_state=0, return_indicator=True)
    X = StandardScaler().fit_transform(X)
    clf = MLPClassifier(hidden_layer_sizes=(50,), learning_rate_init=0.2, max_iter=200,
                        random_state=0, momentum=0.9)
    clf.fit(X, Y)
    assert clf.out_activation_ == "logistic" and clf.n_outputs_ == Y.shape[1]
    assert clf.score(X, Y) > 0.9
    assert clf.predict(X).shape == Y.shape
    assert clf.predict_proba(X).shape == Y.shape


def test_regression_1d_and_2d():
    for y in (y_REG[:, 0], y_REG):
        reg = MLPRegressor(hidden_layer_sizes=(30,), learning_rate_init=0.1, max_iter=300,
                           random_state=0)
        reg.fit(X_REG, y)
        assert reg.score(X_REG, y) > 0.9
        assert reg.predict(X_REG).shape == y.shape


def test_partial_fit_classes_and_unseen_labels():
    clf = MLPClassifier(hidden_layer_sizes=(5,))
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X_IRIS, y_IRIS)
    clf.partial_fit(X_IRIS[:10], y_IRIS[:10], classes=[0, 1, 2])
    assert list(clf.classes_) == [0, 1, 2] and clf.n_iter_ == 1
    with pytest.raises(ValueError, match="not in `self.classes_`"):
        clf.partial_fit(X_IRIS, y_IRIS + 1)


def test_partial_fit_equals_fit_without_shuffling():
    params = dict(hidden_layer_sizes=(8,), random_state=0, shuffle=False, tol=0.0,
                  learning_rate_init=0.05, batch_size=30)
    full = MLPRegressor(max_iter=5, **params).fit(X_REG, y_REG)
    part = MLPRegressor(**params)
    for _ in range(5):
        part.partial_fit(X_REG, y_REG)
    np.testing.assert_allclose(part.coefs_[0], full.coefs_[0], rtol=1e-12)
    assert part.t_ == full.t_


def test_partial_fit_refuses_early_stopping():
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        MLPRegressor(early_stopping=True).partial_fit(X_REG, y_REG)


def test_warm_start_continues_and_checks_classes():
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, warm_start=True, random_state=0)
    clf.fit(X_IRIS, y_IRIS)
    before = clf.coefs_[0].copy()
    clf.fit(X_IRIS, y_IRIS)
    assert not np.array_equal(before, clf.coefs_[0]) and clf.t_ == 6 * 150
    with pytest.raises(ValueError, match="warm_start can only be used where `y` has the "
                                         "same classes"):
        clf.fit(X_IRIS, np.where(y_IRIS == 2, 1, y_IRIS))


def test_early_stopping_keeps_the_best_validation_score():
    clf = MLPClassifier(hidden_layer_sizes=(20,), learning_rate_init=0.1, max_iter=50,
                        early_stopping=True, validation_fraction=0.2, random_state=0)
    clf.fit(X_DIGITS, y_DIGITS)
    assert clf.n_iter_ < 50
    assert len(clf.validation_scores_) == clf.n_iter_
    assert clf.best_validation_score_ == max(clf.validation_scores_)
    assert clf.best_loss_ is None


def test_n_iter_no_change():
    tol = 0.01
    for n_iter_no_change in (2, 5, 10):
        clf = MLPClassifier(tol=tol, max_iter=3000, n_iter_no_change=n_iter_no_change,
                            random_state=0, learning_rate_init=0.1)
        clf.fit(X_IRIS, y_IRIS)
        assert clf.n_iter_ < 3000
        # stops when n_iter_no_change epochs did not improve the best loss by tol
        assert clf._no_improvement_count == n_iter_no_change + 1


def test_convergence_warning_at_max_iter():
    with pytest.warns(ConvergenceWarning, match="Maximum iterations"):
        MLPClassifier(max_iter=2, tol=0.0).fit(X_IRIS, y_IRIS)


def test_sample_weights():
    w = np.ones(len(y_IRIS))
    params = dict(hidden_layer_sizes=(5,), random_state=0, max_iter=20, batch_size=150)
    plain = MLPClassifier(**params).fit(X_IRIS, y_IRIS)
    ones = MLPClassifier(**params).fit(X_IRIS, y_IRIS, sample_weight=w)
    np.testing.assert_array_equal(plain.coefs_[0], ones.coefs_[0])
    # full batch: integer weights are repeated rows
    w = np.random.default_rng(0).integers(0, 3, size=len(y_IRIS))
    weighted = MLPClassifier(**params, shuffle=False).fit(X_IRIS, y_IRIS, sample_weight=w)
    repeated = MLPClassifier(**{**params, "batch_size": int(w.sum())}, shuffle=False).fit(
        np.repeat(X_IRIS, w, axis=0), np.repeat(y_IRIS, w))
    np.testing.assert_allclose(weighted.coefs_[0], repeated.coefs_[0], rtol=1e-10)
    with pytest.raises(ValueError, match="sample_weight"):
        MLPClassifier().fit(X_IRIS, y_IRIS, sample_weight=np.ones(3))


# ---- errors, inputs, copies --------------------------------------------------------


@pytest.mark.parametrize("solver", ["adam", "lbfgs"])
def test_other_solvers_are_refused(solver):
    with pytest.raises(ValueError, match="solver='sgd'"):
        MLPClassifier(solver=solver).fit(X_IRIS, y_IRIS)


@pytest.mark.parametrize("params, match", [
    (dict(hidden_layer_sizes=(0,)), "hidden_layer_sizes must be > 0"),
    (dict(activation="softplus"), "activation"),
    (dict(learning_rate="sometimes"), "learning_rate"),
    (dict(momentum=1.5), "momentum"),
    (dict(batch_size=0), "batch_size"),
    (dict(rule="heavy"), "rule"),
])
def test_bad_parameters(params, match):
    with pytest.raises(ValueError, match=match):
        MLPClassifier(**params).fit(X_IRIS, y_IRIS)


def test_sparse_X_is_refused_with_a_clear_message():
    scipy_sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="dense data is required"):
        MLPClassifier().fit(scipy_sparse.csr_matrix(X_IRIS), y_IRIS)


def test_pandas_feature_names():
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X_IRIS, columns=[f"f{i}" for i in range(4)])
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=5).fit(frame, pd.Series(y_IRIS))
    assert list(clf.feature_names_in_) == list(frame.columns)
    assert clf.predict(frame).shape == (150,)
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(X_IRIS)


def test_coefs_are_views_of_the_flat_buffer_and_survive_pickling():
    clf = MLPClassifier(hidden_layer_sizes=(6, 4), max_iter=5, random_state=0)
    clf.fit(X_IRIS, y_IRIS)
    flat = clf._net.params
    assert all(np.shares_memory(a, flat) for a in clf.coefs_ + clf.intercepts_)
    copy = pickle.loads(pickle.dumps(clf))
    assert all(np.shares_memory(a, copy._net.params) for a in copy.coefs_ + copy.intercepts_)
    np.testing.assert_array_equal(copy.predict_proba(X_IRIS), clf.predict_proba(X_IRIS))
    copy.coefs_[0][...] = 0  # assigning through the views changes the network
    assert not np.array_equal(copy.predict_proba(X_IRIS), clf.predict_proba(X_IRIS))


@pytest.mark.parametrize("cls", [MLPClassifier, MLPRegressor])
def test_joblib_memory_mapped_model_predicts(cls, tmp_path):
    joblib = pytest.importorskip("joblib")
    y = y_IRIS if cls is MLPClassifier else X_IRIS[:, 0]
    est = cls(hidden_layer_sizes=(300,), max_iter=5, random_state=0).fit(X_IRIS, y)
    path = tmp_path / "model.joblib"
    joblib.dump(est, path)
    loaded = joblib.load(path, mmap_mode="r")
    assert not loaded._net.params.flags.writeable
    np.testing.assert_array_equal(loaded.predict(X_IRIS), est.predict(X_IRIS))


def test_one_import_swap_in_pipelines_and_search():
    assert momcore.MLPClassifier is MLPClassifier and momcore.MLPRegressor is MLPRegressor
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(10,),
                                                          learning_rate_init=0.1,
                                                          max_iter=30, random_state=0))
    scores = cross_val_score(pipe, _iris.data, y_IRIS, cv=3)
    assert scores.mean() > 0.85
    search = GridSearchCV(MLPClassifier(max_iter=20, random_state=0),
                          {"alpha": [1e-4, 1e-2], "momentum": [0.5, 0.9]}, cv=2)
    search.fit(X_IRIS, y_IRIS)
    assert search.best_score_ > 0.8


def test_momcore_rule_and_momentum_schedule():
    clf = MLPClassifier(hidden_layer_sizes=(10,), rule="velocity", learning_rate_init=0.05,
                        momentum_schedule=momcore.schedules.momentum_annealing(0.5, 0.9, epochs=10),
                        max_iter=100, random_state=0)
    clf.fit(X_IRIS, y_IRIS)
    assert clf._net.optimizer.rule == "velocity"
    np.testing.assert_allclose(clf._net.history_.momentum[:2], [0.5, 0.54])
    assert clf.score(X_IRIS, y_IRIS) > 0.9


def test_float32_preserved():
    clf = MLPClassifier(max_iter=3).fit(X_IRIS.astype(np.float32), y_IRIS)
    assert clf.coefs_[0].dtype == np.float32
    assert clf.predict_proba(X_IRIS.astype(np.float32)).dtype == np.float32
    assert clf.predict_proba(X_IRIS).dtype == np.float64


def test_verbose_prints_scikit_learns_lines(capsys):
    MLPClassifier(max_iter=2, verbose=True).fit(X_IRIS, y_IRIS)
    assert "Iteration 1, loss = " in capsys.readouterr().out
