"""The paper's Table 1: trainable parameters and GFLOPs at 224x224.

Reproducible rows must match within 0.01 M / 0.01 GFLOPs; the rows listed in
benchmarks/table1.py NOT_REPRODUCED (reasons in docs/table1.md) must really miss,
so the documentation cannot go stale silently.
"""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_spec = importlib.util.spec_from_file_location(
    "table1_benchmark", os.path.join(ROOT, "benchmarks", "table1.py"))
table1 = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(table1)


@pytest.mark.parametrize("label, name, paper_params, paper_gflops", table1.PAPER_TABLE1,
                         ids=[row[1] for row in table1.PAPER_TABLE1])
def test_table1_row(label, name, paper_params, paper_gflops):
    (_, _, params, _, gflops, _, _), = table1.measure([name])
    failing = table1.NOT_REPRODUCED.get(name, ())
    params_ok = abs(params - paper_params) <= table1.PARAMS_TOLERANCE_M
    gflops_ok = abs(gflops - paper_gflops) <= table1.GFLOPS_TOLERANCE
    assert params_ok == ("params" not in failing), (label, params, paper_params)
    assert gflops_ok == ("gflops" not in failing), (label, gflops, paper_gflops)


def test_docs_table_lists_every_row():
    with open(os.path.join(ROOT, "docs", "table1.md")) as handle:
        text = handle.read()
    for label, name, _, _ in table1.PAPER_TABLE1:
        assert f"| {label} (`{name}`) |" in text
    assert "Rows that do not reproduce" in text
