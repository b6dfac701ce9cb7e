"""Paired statistics for multi-seed comparisons (what `aw-compare` reports).

Two models trained with the same seed see the same data order and augmentation,
so their per-seed errors are paired: the test is on the per-seed differences,
model minus baseline.

Example:

>>> result = paired_difference([0.20, 0.19, 0.21], [0.21, 0.20, 0.21])
>>> round(result["mean_diff"], 4), result["n"]
(-0.0067, 3)
>>> verdict(result, lower_is_better=True)
'not distinguishable at this budget'
"""

import math

import numpy as np

CONFIDENCE = 0.95
TEST_NAME = "paired two-sided Student t-test on per-seed differences (scipy.stats.ttest_rel)"


def paired_difference(model_values, baseline_values, confidence=CONFIDENCE):
    """Mean of ``model - baseline`` over pairs, its ``confidence`` interval and the
    two-sided p-value of a paired t-test.

    Args:
        model_values, baseline_values: sequences of equal length, one value per
            seed, in the same seed order.
        confidence: the interval's coverage (default 0.95).

    Returns:
        ``{"mean_diff", "ci95": [low, high] or None, "p_value" or None, "n",
        "std_diff", "t", "df"}``. With one pair there is no interval or p-value
        (None). When every difference is equal the interval has zero width and
        the p-value is 1.0 if they are all zero, else 0.0.
    """
    model = np.asarray(model_values, dtype=np.float64)
    baseline = np.asarray(baseline_values, dtype=np.float64)
    if model.ndim != 1 or model.shape != baseline.shape:
        raise ValueError(
            "`model_values` and `baseline_values` must be 1-D sequences of the same length, "
            f"received shapes {model.shape} and {baseline.shape}.")
    if model.size == 0:
        raise ValueError("`model_values` is empty: at least one paired value is needed.")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"`confidence` must be in (0, 1), received {confidence!r}.")
    diffs = model - baseline
    n = int(diffs.size)
    mean = float(diffs.mean())
    result = {"mean_diff": mean, "ci95": None, "p_value": None, "n": n, "std_diff": None,
              "t": None, "df": n - 1}
    if n < 2:
        return result
    from scipy import stats

    std = float(diffs.std(ddof=1))
    result["std_diff"] = std
    if std == 0.0:
        result["ci95"] = [mean, mean]
        result["p_value"] = 1.0 if mean == 0.0 else 0.0
        result["t"] = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
        return result
    half_width = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    test = stats.ttest_rel(model, baseline)
    result["ci95"] = [mean - half_width, mean + half_width]
    result["p_value"] = float(test.pvalue)
    result["t"] = float(test.statistic)
    return result


def verdict(result, lower_is_better=True):
    """Plain words for a `paired_difference` result: "better", "worse" (the whole
    interval on one side of zero), "not distinguishable at this budget", or, with
    one pair, that no interval exists."""
    if result["ci95"] is None:
        return "one seed: no confidence interval, cannot tell"
    low, high = result["ci95"]
    if low <= 0.0 <= high:
        return "not distinguishable at this budget"
    below = high < 0.0
    return "better" if below == lower_is_better else "worse"
