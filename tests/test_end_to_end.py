import json

import pytest

from bench import list_methods
from bench.cli import main
from bench.sweep import SweepSpec, run_configs
from helpers import run_records

RECORD_FIELDS = {"run_id", "config_hash", "method", "config", "dataset", "num_labels", "metrics",
                 "memory", "throughput", "wall_time_s", "status", "environment", "seed", "epochs"}


def _records(tmp_path):
    return run_records(tmp_path / "results")


@pytest.mark.parametrize("method", list_methods())
def test_every_method_runs_end_to_end(method, tiny_overrides, tmp_path, capsys):
    assert main(["run", f"method={method}", *tiny_overrides]) == 0
    (record,) = _records(tmp_path)
    assert RECORD_FIELDS <= set(record)
    assert record["status"] == "ok" and record["method"] == method and record["num_labels"] == 64
    for key in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@1", "PSP@5", "PSnDCG@5", "R@5"):
        assert 0.0 <= record["metrics"][key] <= 1.0
    memory = record["memory"]
    assert memory["peak_bytes"] >= memory["baseline_bytes"] > 0
    assert memory["classifier"]["total"] == sum(v for k, v in memory["classifier"].items() if k != "total")
    assert record["throughput"]["train_samples_per_s"] > 0
    assert record["throughput"]["inference_samples_per_s"] > 0
    assert record["environment"]["torch"]
    assert "P@1=" in capsys.readouterr().out


def test_offline_wandb_run_directory_is_written(tiny_overrides, tmp_path):
    overrides = [o for o in tiny_overrides if not o.startswith("tracking.wandb")]
    assert main(["run", "method=dense", *overrides, "tracking.wandb=offline"]) == 0
    (record,) = _records(tmp_path)
    runs = list((tmp_path / "results" / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and record["run_id"] in runs[0].name
    assert any(runs[0].rglob("*.wandb"))  # the offline run's data file, ready for `wandb sync`


def test_dense_model_learns_synthetic_data(tiny_overrides, tmp_path):
    """Trained P@1 must clearly beat ranking labels by training frequency."""
    import numpy as np

    from bench.config import resolve
    from bench.data.catalog import load_dataset
    from bench.metrics import evaluate_topk

    overrides = [*tiny_overrides, "data.num_train=1500", "data.num_features=1000", "train.epochs=3",
                 "train.batch_size=32"]
    assert main(["run", "method=dense", *overrides]) == 0
    (record,) = _records(tmp_path)
    data = load_dataset(resolve(overrides).data)
    popular = np.argsort(-data.train_y.column_counts(), kind="stable")[:5]
    baseline = evaluate_topk(np.tile(popular, (data.num_test, 1)), data.test_y, ks=(1,))["P@1"]
    assert record["metrics"]["P@1"] > max(1.8 * baseline, baseline + 0.25)


def test_failures_are_recorded(tiny_overrides, tmp_path, capsys):
    assert main(["run", "method=dense", *tiny_overrides, "train.lr_classifier=1e38",
                 "train.warmup_steps=0"]) == 1
    assert main(["run", "method=dense", *tiny_overrides, "data.avg_labels_per_point=1000"]) == 1
    nan_run, bad_data = _records(tmp_path)
    assert nan_run["status"] == "failed" and nan_run["reason"] == "nan"
    assert bad_data["status"] == "failed" and "avg_labels_per_point" in bad_data["reason"]
    assert "failed" in capsys.readouterr().err


def test_bad_override_is_a_clear_error(capsys):
    assert main(["run", "method=dense", "train.epoch=2"]) == 2
    assert "did you mean train.epochs" in capsys.readouterr().err


def test_suite_runs_each_config_in_its_own_process_and_reports(tiny_overrides, tmp_path, capsys):
    suite = SweepSpec("mini", grid={"data.num_labels": [32, 64], "method": ["dense", "ffi-static"]})
    overrides = [o for o in tiny_overrides if not o.startswith("data.num_labels")]
    group, records, _ = run_configs(suite.name, suite.expand(overrides))
    assert [r["status"] for r in records] == ["ok"] * 4
    assert {r["group"] for r in _records(tmp_path)} == {group}
    assert len({r["environment"]["hostname"] for r in records}) == 1
    out = tmp_path / "report.md"
    assert main(["report", "--results", str(tmp_path / "results"), "--out", str(out)]) == 0
    table = out.read_text()
    assert table.count("| dense |") == 2 and table.count("| ffi-static |") == 2
    assert "| 32 |" in table and "| 64 |" in table


def test_list_shows_classifiers_and_methods(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("dense", "masked", "ffi", "ffi-static", "masked-static", "synthetic"):
        assert name in out


def test_evaluate_command(tmp_path, capsys):
    # 2 rows, 4 labels. Row 0 truth {0, 2}; predicted order 2, 1, 0. Row 1 truth {3}; order 3, 0.
    (tmp_path / "pred.txt").write_text("2 4\n0:0.5 1:0.7 2:0.9\n0:0.1 3:0.8\n")
    (tmp_path / "true.txt").write_text("2 4\n0 2\n3\n")
    assert main(["evaluate", "--predictions", str(tmp_path / "pred.txt"),
                 "--labels", str(tmp_path / "true.txt"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("P@1", "P@3", "P@5", "nDCG@1", "nDCG@3", "nDCG@5",
                "PSP@1", "PSP@3", "PSP@5", "PSnDCG@1", "PSnDCG@3", "PSnDCG@5"):
        assert key in result
    assert result["P@1"] == pytest.approx(1.0)  # both rows rank a true label first
    assert result["P@3"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    (tmp_path / "bad.txt").write_text("2 4\n0:0.5 9:0.1\n\n")
    assert main(["evaluate", "--predictions", str(tmp_path / "bad.txt"),
                 "--labels", str(tmp_path / "true.txt")]) == 2
    assert "bad.txt:2" in capsys.readouterr().err


def test_same_seed_repeats_the_run_exactly(tiny_overrides, tmp_path):
    for seed in (3, 3, 4):
        assert main(["run", "method=ffi-set", *tiny_overrides, "dst.interval=2", f"seed={seed}"]) == 0
    first, again, other = _records(tmp_path)
    assert first["metrics"] == again["metrics"] and first["final_train_loss"] == again["final_train_loss"]
    assert first["config_hash"] == again["config_hash"] != other["config_hash"]
    assert first["final_train_loss"] != other["final_train_loss"]
