import pytest

from automl.reward import Target, reward
from searchers.errors import UsageError


def test_eq19_meets_target_costs_nothing():
    assert reward(0.9, 70.0, 80.0) == 0.9
    assert reward(0.9, 80.0, 80.0) == 0.9


def test_eq19_over_target_scales_down_proportionally():
    assert reward(0.9, 100.0, 80.0) == pytest.approx(0.9 * 0.8)
    assert reward(0.9, 160.0, 80.0) == pytest.approx(0.45)


def test_target_validation_and_metrics():
    with pytest.raises(UsageError, match="> 0"):
        Target(value=0.0)
    with pytest.raises(UsageError, match="valid choices"):
        Target(value=1.0, metric="joules")
    assert Target(value=20, metric="mflops").measure(None, 25e6) == 25.0
    with pytest.raises(UsageError, match="FLOPs target"):
        Target(value=80).measure(None, 1e6)
