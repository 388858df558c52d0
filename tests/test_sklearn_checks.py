"""scikit-learn's estimator checks over momcore.MLPClassifier and MLPRegressor.

The default run covers every activation, both of scikit-learn's momentum updates and
both dtypes in four configurations per estimator; ``-m slow`` runs their full cross
product (4 activations x 2 updates x 2 dtypes).
"""
import itertools

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="the scikit-learn estimators need scikit-learn")
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from momcore.sklearn import MLPClassifier, MLPRegressor  # noqa: E402

# (activation, nesterovs_momentum, dtype): each activation, update and dtype at least once
DEFAULT = [("relu", True, None), ("logistic", False, np.float32),
           ("tanh", True, np.float32), ("identity", False, np.float64)]
# MLPClassifier has no decision_function (neither has scikit-learn's), so
# check_classifiers_multilabel_output_format_decision_function skips itself: the one
# skip per classifier.
EVERY = [c for c in itertools.product(("identity", "logistic", "tanh", "relu"),
                                      (False, True), (np.float32, np.float64))
         if c not in DEFAULT]

# With scikit-learn's default learning_rate_init=0.001 and max_iter=100 (the value its
# own checks give its MLPs), scikit-learn's MLPRegressor(solver="sgd") itself fails
# three checks with identity units (training diverges on the checks' unscaled data)
# and check_regressors_train with logistic units (R^2 < 0.5 after 100 epochs); momcore
# trains the same weights, so it fails the same. The logistic regressor gets a learning
# rate that suits it (1e-2: every check passes); for the identity regressor no single
# learning rate serves both the unscaled data of check_fit_idempotent (diverges above
# about 1e-5) and check_regressors_train (needs more than 1e-5), in scikit-learn as in
# momcore: those three checks are expected to fail, with scikit-learn's own reason.
REGRESSOR_LR = {"logistic": 1e-2}
IDENTITY_REGRESSOR_DIVERGES = (
    "an all-linear network at learning_rate_init=0.001 diverges on this check's "
    "unscaled data and fit raises ValueError (non-finite loss), as "
    "scikit-learn's own MLPRegressor(solver='sgd', activation='identity', max_iter=100) "
    "does on the same data")


def _estimators(configs):
    for activation, nesterov, dtype in configs:
        common = dict(activation=activation, nesterovs_momentum=nesterov, dtype=dtype,
                      max_iter=100)
        yield MLPClassifier(**common)
        yield MLPRegressor(**common, learning_rate_init=REGRESSOR_LR.get(activation, 1e-3))


def _expected_failed_checks(estimator):
    expected = {}
    if isinstance(estimator, MLPRegressor) and estimator.activation == "identity":
        expected.update({name: IDENTITY_REGRESSOR_DIVERGES for name in (
            "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in")})
    if estimator.dtype is np.float32:
        expected.update({"check_sample_weight_equivalence_on_dense_data":
                "dtype=float32 trains in float32: the fit with integer sample weights "
                "and the fit on repeated rows agree to float32 rounding (about 3e-7 "
                "relative), the check asks for 1e-7; with dtype=None or float64 it passes"})
    return expected


@pytest.fixture(autouse=True)
def _array_api_dispatch(monkeypatch):
    # check_array_api_input (numpy namespace: enabling array-API dispatch must not
    # change results) skips itself unless SCIPY_ARRAY_API is set; it reads the
    # variable at call time only.
    monkeypatch.setenv("SCIPY_ARRAY_API", "1")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(list(_estimators(DEFAULT)),
                          expected_failed_checks=_expected_failed_checks)
def test_estimator_checks(estimator, check):
    check(estimator)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(list(_estimators(EVERY)),
                          expected_failed_checks=_expected_failed_checks)
def test_estimator_checks_every_configuration(estimator, check):
    check(estimator)
