"""Reports from a fixture of records: tables (md, LaTeX, HTML), mean ± std, best marked, figures."""

import pytest

from bench.cli import main
from bench.record import append_record


def _record(method, labels, seed, p1, peak, finished="2026-01-01T00:00:00", status="ok", fan_in=32):
    return {
        "run_id": f"{method}-{labels}-{seed}-{finished}", "method": method, "num_labels": labels, "seed": seed,
        "status": status, "finished_at": finished, "dataset": {"name": "synthetic"},
        "config": {"model": {"fan_in": fan_in, "embed_dim": 256}, "data": {"name": "synthetic"}},
        "metrics": {"P@1": p1, "P@3": p1 / 2, "P@5": p1 / 3, "PSP@1": p1 / 4, "PSP@3": p1 / 5, "PSP@5": p1 / 6},
        "memory": {"peak_bytes": peak, "classifier": {"total": peak // 10}},
        "throughput": {"train_samples_per_s": 1000.0, "train_seconds": 10.0},
        "epochs": [{"epoch": 1, "step": 10, "metrics": {"P@1": p1 / 2}}, {"epoch": 2, "step": 20, "metrics": {"P@1": p1}}],
        "gradient_flow": {"every": 10, "steps": [10, 20], "encoder_grad_norm": [p1, p1 / 2]},
    }


@pytest.fixture
def results(tmp_path):
    path = tmp_path / "results" / "runs.jsonl"
    for labels in (1024, 4096):
        append_record(path, _record("dense", labels, 0, 0.80, 3 * 2**30))
        append_record(path, _record("dense", labels, 1, 0.70, 3 * 2**30))
        append_record(path, _record("ffi-set", labels, 0, 0.60, 2**30, fan_in=16))
        append_record(path, _record("ffi-set", labels, 0, 0.10, 2**30, finished="2025-01-01", fan_in=16))  # older
        append_record(path, _record("ffi-static", labels, 0, 0.50, 2**30, fan_in=64))
    append_record(path, _record("dense", 1024, 2, 0.0, 1, status="failed"))  # failed runs are not in tables
    return tmp_path / "results"


def test_markdown_table_means_stds_and_best(results, tmp_path, capsys):
    out = tmp_path / "r.md"
    assert main(["report", "--results", str(results), "--out", str(out)]) == 0
    text = out.read_text()
    dense = [line for line in text.splitlines() if line.startswith("| dense | 1,024")][0]
    assert "**75.00 ± 7.07**" in dense  # mean and std of 0.80, 0.70; best P@1 at 1K labels
    assert "| 2 |" in dense  # two seeds (the failed seed 2 is left out)
    ffi = [line for line in text.splitlines() if line.startswith("| ffi-set | 1,024")][0]
    assert "| 60.00 |" in ffi  # the latest ffi-set run, not the older one
    assert "**1.00 GiB**" in ffi  # least peak memory is best


def test_latex_and_html(results, tmp_path):
    tex, page = tmp_path / "r.tex", tmp_path / "r.html"
    assert main(["report", "--results", str(results), "--format", "latex", "--out", str(tex)]) == 0
    assert main(["report", "--results", str(results), "--format", "html", "--out", str(page)]) == 0
    assert r"\textbf{75.00 $\pm$ 7.07}" in tex.read_text() and r"\toprule" in tex.read_text()
    assert "<td><b>75.00 ± 7.07</b></td>" in page.read_text()


def test_figures_are_written(results, tmp_path):
    figures = tmp_path / "figs"
    assert main(["report", "--results", str(results), "--out", str(tmp_path / "r.md"), "--figures", str(figures)]) == 0
    names = {p.name for p in figures.iterdir()}
    for stem in ("p1_vs_labels", "peak_memory_vs_labels", "classifier_memory_vs_labels", "throughput_vs_labels",
                 "training_curves", "p1_vs_sparsity", "encoder_grad_norm"):
        assert {f"{stem}.png", f"{stem}.svg"} <= names
    assert all(p.stat().st_size > 1000 for p in figures.iterdir())


def test_results_without_finished_runs(tmp_path, capsys):
    append_record(tmp_path / "runs.jsonl", _record("dense", 1024, 0, 0.0, 1, status="failed"))
    assert main(["report", "--results", str(tmp_path), "--out", str(tmp_path / "r.md")]) == 0
    assert "No finished runs" in capsys.readouterr().out


@pytest.mark.parametrize("flags", [[], ["--leaderboard", "synthetic"], ["--pivot", "P@1"]])
def test_a_results_dir_without_records_is_an_error(flags, results, tmp_path, capsys):
    out = tmp_path / "r.md"
    assert main(["report", "--results", str(tmp_path / "reslts"), "--out", str(out), *flags]) == 2
    assert f"results directory {tmp_path / 'reslts'} does not exist" in capsys.readouterr().err
    assert main(["report", "--results", str(tmp_path), "--out", str(out), *flags]) == 2  # a folder, no runs.jsonl
    assert f"results directory {tmp_path} holds no runs.jsonl" in capsys.readouterr().err
    assert not out.exists()


def test_leaderboard_puts_our_runs_beside_published_rows(results, tmp_path):
    csv = tmp_path / "published.csv"
    csv.write_text("dataset,method,kind,P@1,P@3,P@5,source,split,checked,note\n"
                   "synthetic,OtherXML,tree,90.0,50.0,30.0,Somebody 2020,x,yes,\n")
    from bench.report import leaderboard, load_frame

    text = leaderboard(load_frame(results), "synthetic", csv)
    lines = text.splitlines()
    assert lines[4].startswith("| OtherXML | published | 90.00")  # best first
    assert any(line.startswith("| dense | this suite (2 seed(s)) | 75.00") and "| -15.00 |" in line for line in lines)


def test_pivot_tables_methods_by_label_space_size(results, tmp_path):
    out = tmp_path / "pivot.md"
    assert main(["report", "--results", str(results), "--pivot", "P@1", "peak_bytes", "--out", str(out)]) == 0
    text = out.read_text()
    assert "| method | L = 1,024 | L = 4,096 |" in text
    assert "| dense | **75.00 ± 7.07** | **75.00 ± 7.07** |" in text  # mean over seeds, best per size bold
    assert "| ffi-set | 60.00 | 60.00 |" in text  # the latest ffi-set run only
    assert "**peak memory**" in text and "| ffi-static | **1.00 GiB** | **1.00 GiB** |" in text
    assert main(["report", "--results", str(results), "--pivot", "nonsense", "--out", str(out)]) == 2
