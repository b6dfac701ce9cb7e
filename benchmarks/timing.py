"""Interleaved timing shared by the benchmark scripts.

Candidates are called round-robin (one call each per round), so machine noise
hits all of them alike; the median of the rounds is reported.

>>> medians = time_interleaved({"a": fast_fn, "b": slow_fn}, repeats=9)  # doctest: +SKIP
"""

import statistics
import time

import numpy as np


def time_interleaved(candidates, repeats, warmup=0):
    """Median seconds per name; ``candidates``: {name: fn}, fn() returns a
    tensor or array (materialized with ``np.asarray`` inside the timing)."""
    for fn in candidates.values():
        for _ in range(warmup):
            np.asarray(fn())
    samples = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            np.asarray(fn())
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}
