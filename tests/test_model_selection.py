"""Model selection: the record's best epoch (eval.select), early stopping (train.patience),
and `xmc-bench report --select last|best` (an older record without `best` reads as its last)."""

import pytest

import bench.train
from bench.cli import main
from bench.config import resolve
from bench.errors import ConfigError
from bench.record import append_record, read_records, records_frame, selected_metrics
from bench.train import evaluations_without_improvement, select_best


def _records(tmp_path):
    return list(read_records(tmp_path / "results" / "runs.jsonl"))


def _history(values, key="P@1"):
    return [{"epoch": i + 1, "step": 10 * (i + 1), **({"metrics": {key: v}} if v is not None else {})}
            for i, v in enumerate(values)]


def test_select_best_takes_the_highest_and_the_earliest_of_equals():
    history = _history([0.1, 0.4, None, 0.4, 0.3])
    best = select_best(history, "P@1")
    assert best == {"epoch": 2, "step": 20, "metric": "P@1", "value": 0.4, "metrics": {"P@1": 0.4}}
    assert select_best(_history([None, None]), "P@1") is None


def test_evaluations_without_improvement_counts_evaluations_only():
    assert evaluations_without_improvement(_history([0.1, 0.3, 0.2, None, 0.3]), "P@1") == 2  # equal is no gain
    assert evaluations_without_improvement(_history([0.1, 0.3, 0.2, 0.5]), "P@1") == 0
    assert evaluations_without_improvement([], "P@1") == 0


def test_a_real_run_records_its_best_epoch(tiny_overrides, tmp_path):
    overrides = [*tiny_overrides, "train.epochs=4", "train.batch_size=32", "train.lr_classifier=2"]
    assert main(["run", "method=dense", *overrides, "eval.select=P@3"]) == 0
    (record,) = _records(tmp_path)
    best, history = record["best"], record["epochs"]
    assert best["metric"] == "P@3" and record["stopped_early"] is None
    values = [e["metrics"]["P@3"] for e in history]
    assert best["value"] == max(values) >= record["metrics"]["P@3"]
    assert best["epoch"] == history[values.index(max(values))]["epoch"]
    assert best["metrics"] == history[best["epoch"] - 1]["metrics"]
    assert record["metrics"] == history[-1]["metrics"]  # `metrics` stays the last epoch's


def _scripted_evaluation(monkeypatch, p1, p3):
    """Make every evaluation return the next of the scripted P@1 / P@3 values."""
    calls = iter(zip(p1, p3))

    def fake(model, x, y, cfg, *args, **kwargs):
        a, b = next(calls)
        return {"P@1": a, "P@3": b, "P@5": b / 2}, x.num_rows, 0.01

    monkeypatch.setattr(bench.train, "evaluate", fake)


def test_early_stopping_after_patience_evaluations_without_gain(tiny_overrides, tmp_path, monkeypatch):
    _scripted_evaluation(monkeypatch, [0.1, 0.3, 0.2, 0.25, 0.3, 0.9, 0.9, 0.9], [0.1] * 8)
    assert main(["run", "method=dense", *tiny_overrides, "train.epochs=8", "train.patience=3"]) == 0
    (record,) = _records(tmp_path)
    # P@1 improves at epochs 1 and 2; epochs 3, 4, 5 bring no gain: training stops after epoch 5
    assert record["stopped_early"] == 5 and len(record["epochs"]) == 5
    assert record["best"]["epoch"] == 2 and record["best"]["value"] == 0.3
    assert record["metrics"]["P@1"] == 0.3 and record["epochs"][-1]["epoch"] == 5
    assert record["steps"] == 5 * 7  # 400 points in batches of 64


def test_early_stopping_can_watch_another_metric(tiny_overrides, tmp_path, monkeypatch):
    """The reference selects on P@1 but stops on P@3: train.patience_metric."""
    _scripted_evaluation(monkeypatch, [0.1, 0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.3, 0.3])
    assert main(["run", "method=dense", *tiny_overrides, "train.epochs=5", "train.patience=2",
                 "train.patience_metric=P@3"]) == 0
    (record,) = _records(tmp_path)
    assert record["stopped_early"] == 3 and record["best"]["epoch"] == 3 and record["best"]["metric"] == "P@1"


def test_no_early_stop_on_the_last_epoch(tiny_overrides, tmp_path, monkeypatch):
    _scripted_evaluation(monkeypatch, [0.3, 0.2, 0.1], [0.1] * 3)
    assert main(["run", "method=dense", *tiny_overrides, "train.epochs=3", "train.patience=2"]) == 0
    (record,) = _records(tmp_path)
    assert record["stopped_early"] is None and len(record["epochs"]) == 3 and record["best"]["epoch"] == 1


def test_patience_needs_every_epoch_and_a_computed_metric():
    with pytest.raises(ConfigError, match="train.patience.*eval.every_epoch"):
        resolve(["train.patience=3", "eval.every_epoch=false"])
    with pytest.raises(ConfigError, match="eval.select.*eval.max_k"):
        resolve(["eval.select=P@5", "eval.max_k=3"])
    with pytest.raises(ConfigError, match="eval.select"):
        resolve(["eval.select=P@2"])
    with pytest.raises(ConfigError, match="train.patience_metric"):
        resolve(["train.patience_metric=accuracy"])
    assert resolve(["train.patience=25", "train.patience_metric=P@3"]).train.patience == 25


# -- reports -----------------------------------------------------------------------------------

def _record(run_id, last, best=None, seed=0):
    record = {"run_id": run_id, "method": "dense", "num_labels": 64, "seed": seed, "status": "ok",
              "finished_at": "2026-01-01T00:00:00", "dataset": {"name": "synthetic"},
              "config": {"model": {"fan_in": 32, "embed_dim": 32}, "data": {"name": "synthetic"}},
              "metrics": {"P@1": last, "P@3": last / 2}, "memory": {}, "throughput": {},
              "epochs": [{"epoch": 1, "step": 5, "metrics": {"P@1": best or last}},
                         {"epoch": 2, "step": 10, "metrics": {"P@1": last, "P@3": last / 2}}]}
    if best is not None:
        record["best"] = {"epoch": 1, "step": 5, "metric": "P@1", "value": best,
                          "metrics": {"P@1": best, "P@3": best / 2}}
    return record


def test_selected_metrics_of_new_and_old_records():
    new, old = _record("a", 0.5, best=0.7), _record("b", 0.4)
    assert selected_metrics(new, "last") == ({"P@1": 0.5, "P@3": 0.25}, 2)
    assert selected_metrics(new, "best") == ({"P@1": 0.7, "P@3": 0.35}, 1)
    assert selected_metrics(old, "best") == selected_metrics(old, "last")  # no `best`: reads as last
    frame = records_frame([new, old], select="best")
    assert list(frame["P@1"]) == [0.7, 0.4] and list(frame["metrics_epoch"]) == [1, 2]


def test_report_select_best_shows_the_best_values(tmp_path):
    results = tmp_path / "results"
    append_record(results / "runs.jsonl", _record("a", 0.5, best=0.7))
    last, best = tmp_path / "last.md", tmp_path / "best.md"
    assert main(["report", "--results", str(results), "--out", str(last)]) == 0
    assert main(["report", "--results", str(results), "--out", str(best), "--select", "best"]) == 0
    assert "| 50.00 |" in last.read_text() and "70.00" not in last.read_text()
    assert "| 70.00 |" in best.read_text() and "best evaluated epoch" in best.read_text()


def test_report_select_best_reads_an_old_record_as_last(tmp_path):
    results = tmp_path / "results"
    append_record(results / "runs.jsonl", _record("b", 0.4))
    out = tmp_path / "r.md"
    assert main(["report", "--results", str(results), "--out", str(out), "--select", "best"]) == 0
    assert "| 40.00 |" in out.read_text()
    with pytest.raises(SystemExit):  # argparse: not a choice
        main(["report", "--results", str(results), "--out", str(out), "--select", "worst"])
