"""`xmc-bench kernels --topk`: the top-k table's rows and records (tiny sizes; no timing asserted)."""

from __future__ import annotations

import json

import pytest

from bench.bench_kernels import TOPK_HEADER, TOPK_LAYERS, format_topk_row, run_topk
from bench.cli import main


def test_topk_table_rows_and_records(tmp_path):
    rows = run_topk(batch=8, dim=16, labels=(600,), fan_in=4, k=3, warmup=0, repeats=1, out_dir=tmp_path,
                    log=lambda line: None)
    assert [r.layer for r in rows] == list(TOPK_LAYERS)
    for r in rows:
        assert r.score_ms > 0 and r.topk_ms > 0
        assert r.select_ms == pytest.approx(r.topk_ms - r.score_ms)
        assert r.select_vs_score == pytest.approx(r.select_ms / r.score_ms)
        assert format_topk_row(r).count("|") == TOPK_HEADER.count("|")
    records = [json.loads(line) for line in (tmp_path / "kernels.jsonl").read_text().splitlines()]
    assert [rec["table"] for rec in records] == ["topk"] * len(rows)
    assert {rec["layer"] for rec in records} == set(TOPK_LAYERS) and records[0]["env"]["timing"] == "interleaved"


def test_topk_table_rejects_unknown_layers(tmp_path):
    with pytest.raises(ValueError, match="top-k table layers"):
        run_topk(batch=4, dim=8, labels=(50,), fan_in=2, layers=["masked"], out_dir=tmp_path)


def test_cli_topk(tmp_path, capsys):
    assert main(["kernels", "--topk", "--topk-labels", "300", "--topk-dim", "16", "--topk-batch", "4",
                 "--topk-fan-in", "4", "--topk-k", "2", "--repeats", "1", "--warmup", "0",
                 "--layers", "dense", "ffi", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "select ÷ score" in out and "| ffi " in out and "| dense " in out
    assert len((tmp_path / "kernels.jsonl").read_text().splitlines()) == 2
