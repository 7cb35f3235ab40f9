"""eval's report: --compare's arm tables (Appendix D layout, equal-L0 interpolation), CSV rows, markdown."""

from __future__ import annotations

import csv
import math

import pytest

from fastsae.interp.eval_report import _frontier, compare_tables, write_all


def sae(name, arm, l0, mse, rec, arch="jumprelu", coef=0.01):
    m = {"l0": l0, "mse": mse, "log2_mse": math.log2(mse), "log2_mse_st": math.log2(mse) + 1,
         "ce_loss_recovered_mean": rec, "delta_loss": 0.1, "kl": 0.05}  # fmt: skip
    return {
        "name": name,
        "path": name,
        "identity": {
            "arch": arch,
            "d_sae": 4608,
            "layer": 9,
            "arm": arm,
            "training_tokens": 1000,
            "sweep_point": {"sparsity_coef": coef, "k": None, "lr": 1e-3},
        },  # fmt: skip
        "metrics": {"all": m, "assistant": dict(m), "first": {"l0": l0, "ce_sae": None}},
        "null_reasons": {},
    }


def doc(saes):
    return {
        "saes": saes,
        "groups": ["all", "assistant", "first"],
        "evaluation": {
            "num_sequences": 3,
            "kind": "heldout",
            "num_tokens": 100,
            "spliced": "every position",
            "scored": "every next-token prediction",
        },  # fmt: skip
    }


def test_frontier_interpolates_in_log_l0_and_never_extrapolates():
    pts = [(10.0, 1.0), (100.0, 3.0)]
    assert _frontier(pts, math.sqrt(10 * 100)) == pytest.approx(2.0)  # halfway in log L0
    assert _frontier(pts, 10.0) == pytest.approx(1.0)
    assert _frontier(pts, 5.0) is None and _frontier(pts, 200.0) is None


def test_compare_lays_out_arms_and_interpolates_at_equal_l0():
    saes = [
        sae("f1", "FAST", 20, 1.0, 0.9, coef=0.01), sae("f2", "FAST", 40, 0.5, 0.95, coef=0.001),
        sae("b1", "BT(F)", 30, 2.0, 0.8, coef=0.01), sae("b2", "BT(F)", 60, 1.0, 0.9, coef=0.001),
    ]  # fmt: skip
    tables = compare_tables(doc(saes))
    title, headers, rows = tables[0]
    assert headers[3:] == ["FAST log2 MSE", "BT(F) log2 MSE", "FAST log2 MSE_st", "BT(F) log2 MSE_st"]
    assert len(rows) == 2 and all("L0" in c and "rec" in c for r in rows for c in r[3:])
    title, headers, rows = tables[1]
    assert "equal L0" in title
    assert [r[0] for r in rows] == ["40.0"]  # FAST's L0 20 lies outside BT(F)'s range [30, 60]
    bt_at_40 = math.log2(2.0) + (math.log(40) - math.log(30)) / (math.log(60) - math.log(30)) * (-1.0)
    assert float(rows[0][headers.index("BT(F) log2 MSE")]) == pytest.approx(bt_at_40, abs=1e-3)
    assert float(rows[0][headers.index("FAST log2 MSE")]) == pytest.approx(math.log2(0.5), abs=1e-3)


def test_write_all_writes_csv_rows_per_group_and_nulls_as_empty(tmp_path):
    md = write_all(doc([sae("f1", "FAST", 20, 1.0, 0.9)]), tmp_path, compare=True)
    rows = list(csv.DictReader(open(tmp_path / "results.csv")))
    assert [r["group"] for r in rows] == ["all", "assistant", "first"] and rows[2]["ce_sae"] == ""
    assert "| f1 |" in md and (tmp_path / "results.md").read_text() == md
    assert (tmp_path / "frontier_mse.png").stat().st_size > 0
