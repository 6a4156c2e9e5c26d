"""Statistics over repeated runs (Fig. 8): each formulation against the first, on runs built by hand."""
import numpy as np
import pandas as pd
import pytest

from automl.analysis import against_reference


def runs_of(formulation: str, kind: str, acc: list[float]) -> pd.DataFrame:
    return pd.DataFrame({"formulation": formulation, "kind": kind, "status": "ok", "test_acc": acc})


def test_each_formulation_against_the_first_mean_difference_and_spread_ratio():
    base = np.array([-2, -1, 0, 1, 2, -2, -1, 0, 1, 2], float)
    runs = pd.concat([
        runs_of("sigmoid", "proxy", list(0.40 + 0.01 * base)),
        runs_of("softmax", "proxy", list(0.40 + 0.05 * base)),     # same mean, 5x the spread
        runs_of("softmax", "intra", list(0.30 + 0.01 * base)),     # 10 points lower, same spread
        runs_of("random", "proxy", list(0.40 + 0.01 * base[::-1])),  # the same values, reordered
        runs_of("random", "other", [0.1, 0.2]),                    # no kind of the reference's: skipped
        runs_of("random", "proxy", [0.9]).assign(status="failed"),  # failed runs do not count
    ], ignore_index=True)
    v = against_reference(runs, ["test_acc"], {"intra": "proxy"}).set_index(["formulation", "kind"])
    assert list(v.index) == [("softmax", "proxy"), ("softmax", "intra"), ("random", "proxy")]
    assert (v["reference"] == "sigmoid").all() and v.loc[("softmax", "intra"), "reference_kind"] == "proxy"
    assert v["n"].tolist() == [10, 10, 10] and v["reference_n"].tolist() == [10, 10, 10]

    spread = v.loc[("softmax", "proxy")]
    assert spread["mean_diff"] == pytest.approx(0, abs=1e-12) and spread["std_ratio"] == pytest.approx(5)
    assert spread["p_mean"] == pytest.approx(1) and spread["p_std"] < 0.01

    lower = v.loc[("softmax", "intra")]
    assert lower["mean_diff"] == pytest.approx(-0.10) and lower["std_ratio"] == pytest.approx(1)
    assert lower["p_mean"] < 1e-10 and lower["p_std"] == pytest.approx(1)

    same = v.loc[("random", "proxy")]
    assert (same["mean_diff"], same["std_ratio"]) == (pytest.approx(0, abs=1e-12), pytest.approx(1))
    assert same["p_mean"] == pytest.approx(1) and same["p_std"] == pytest.approx(1)


def test_nothing_to_compare_is_an_empty_table():
    assert against_reference(runs_of("sigmoid", "proxy", [0.4, 0.5]), ["test_acc"]).empty
    assert against_reference(runs_of("sigmoid", "proxy", [0.4]).assign(status="failed"), ["test_acc"]).empty


@pytest.mark.filterwarnings("error")
def test_a_constant_side_is_compared_without_a_warning():
    """Every run at one cost (a window only one architecture fits) is a sample of spread zero."""
    runs = pd.concat([runs_of("sigmoid", "proxy", [0.38, 0.40, 0.42, 0.39, 0.41]),
                      runs_of("random", "proxy", [0.40] * 5)], ignore_index=True)
    row = against_reference(runs, ["test_acc"]).iloc[0]
    assert row["std_ratio"] == 0 and row["p_mean"] == pytest.approx(1) and 0 < row["p_std"] < 1
