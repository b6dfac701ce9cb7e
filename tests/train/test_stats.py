"""Paired statistics of aw-compare against values derived by hand."""

import math

import pytest

from aw_keras.train.stats import paired_difference
from aw_keras.train.stats import verdict


def _t3_cdf(t):
    """Student t CDF with 3 degrees of freedom, closed form (no scipy)."""
    x = t / math.sqrt(3.0)
    return 0.5 + (x / (1 + x * x) + math.atan(x)) / math.pi


def test_known_paired_case():
    # Differences 1, 2, 3, 4: mean 2.5, sample sd sqrt(5/3), standard error
    # sqrt(5/3)/2, t = 2.5 / se = 3.8730, df = 3; t_0.975,3 = 3.182446305 (tables).
    baseline = [0.10, 0.20, 0.30, 0.40]
    model = [b + d for b, d in zip(baseline, (1.0, 2.0, 3.0, 4.0))]
    result = paired_difference(model, baseline)
    se = math.sqrt(5.0 / 3.0) / 2.0
    t = 2.5 / se
    assert result["n"] == 4 and result["df"] == 3
    assert result["mean_diff"] == pytest.approx(2.5)
    assert result["std_diff"] == pytest.approx(math.sqrt(5.0 / 3.0))
    assert result["t"] == pytest.approx(t)
    assert result["ci95"] == pytest.approx([2.5 - 3.182446305 * se, 2.5 + 3.182446305 * se],
                                           abs=1e-8)
    assert result["p_value"] == pytest.approx(2 * (1 - _t3_cdf(t)), abs=1e-10)
    assert result["p_value"] == pytest.approx(0.0305, abs=1e-4)
    assert verdict(result) == "worse"  # errors higher than the baseline's


def test_verdicts():
    better = paired_difference([0.10, 0.11, 0.12], [0.20, 0.21, 0.23])
    assert better["ci95"][1] < 0 and verdict(better) == "better"
    mixed = paired_difference([0.10, 0.22, 0.15], [0.12, 0.20, 0.15])
    assert mixed["ci95"][0] < 0 < mixed["ci95"][1]
    assert verdict(mixed) == "not distinguishable at this budget"
    # For a metric where higher is better the same interval reads the other way.
    assert verdict(better, lower_is_better=False) == "worse"


def test_one_pair_has_no_interval():
    result = paired_difference([0.2], [0.25])
    assert result["mean_diff"] == pytest.approx(-0.05)
    assert result["ci95"] is None and result["p_value"] is None and result["n"] == 1
    assert "one seed" in verdict(result)


def test_constant_differences():
    same = paired_difference([0.2, 0.3], [0.2, 0.3])
    assert same["ci95"] == [0.0, 0.0] and same["p_value"] == 1.0
    assert verdict(same) == "not distinguishable at this budget"
    shifted = paired_difference([0.25, 0.35], [0.2, 0.3])
    assert shifted["ci95"] == pytest.approx([0.05, 0.05]) and shifted["p_value"] == 0.0
    assert verdict(shifted) == "worse"


@pytest.mark.parametrize("model, baseline, message", [
    ([0.1, 0.2], [0.1], "same length"),
    ([], [], "empty"),
    ([[0.1]], [[0.1]], "1-D"),
])
def test_bad_input(model, baseline, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(model, baseline)
