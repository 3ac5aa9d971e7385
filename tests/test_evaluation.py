"""Known answers for the metrics in evaluation.py."""

import numpy as np
import pytest

from workbench import evaluation


def test_temperature_is_not_fitted_on_a_validation_split_without_errors():
    logits = np.array([[3.0, 0.0], [0.0, 2.0], [1.0, 0.5]])
    labels = np.array([0, 1, 0])  # every row right: NLL keeps falling as T -> 0
    assert evaluation.fit_temperature(labels, logits) == 1.0
    cal = evaluation.calibration(labels, logits, labels, logits)
    assert cal["temperature_fitted"] is False and cal["nll_scaled"] == pytest.approx(cal["nll"])


def test_temperature_softens_an_overconfident_model():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 400)
    logits = rng.normal(size=(400, 3))
    logits[np.arange(400), labels] += 1.0   # right 2 times in 3 or so...
    logits *= 8.0                           # ...but nearly certain every time
    t = evaluation.fit_temperature(labels, logits)
    assert t > 2.0
    assert evaluation.nll(labels, evaluation.softmax(logits, t)) < evaluation.nll(labels, evaluation.softmax(logits))
    assert evaluation.calibration(labels, logits, labels, logits)["temperature_fitted"] is True


def test_track_average_groups_windows_by_track():
    ids, avg = evaluation.track_average(np.array([7, 3, 7]), np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]))
    assert ids.tolist() == [3, 7]
    np.testing.assert_allclose(avg, [[0.0, 1.0], [0.5, 0.5]])
