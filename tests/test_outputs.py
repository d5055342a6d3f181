"""Rendered tables go beside the records they render (results_dir/reports/, or --report/--out),
never into the working tree's reports/ (hand-written study pages), and one command's default
file is not another's."""

from pathlib import Path

import bench.sweep
from bench.cli import main

REPO_REPORTS = Path(__file__).resolve().parent.parent / "reports"


def _snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()} if folder.exists() else {}


def test_suite_and_reports_write_under_results_dir(tiny_overrides, tmp_path, monkeypatch):
    mini = tmp_path / "mini-default.yaml"  # the default suite's shape, two tiny configurations
    mini.write_text("name: default\nbase:\n  train.epochs: 1\ngrid:\n  method: [dense, ffi-static]\n")
    monkeypatch.setattr(bench.sweep, "DEFAULT_SWEEP", str(mini))
    clone = tmp_path / "clone"
    (clone / "reports").mkdir(parents=True)
    monkeypatch.chdir(clone)
    repo_reports = _snapshot(REPO_REPORTS)
    results = tmp_path / "results"

    assert main(["run", *tiny_overrides]) == 0  # no method: the default suite
    suite = (results / "reports" / "suite.md").read_text()
    assert suite.startswith("# Default suite") and "| dense |" in suite and "| ffi-static |" in suite

    assert main(["report", "--results", str(results)]) == 0
    assert main(["report", "--results", str(results), "--leaderboard", "synthetic"]) == 0
    table = (results / "reports" / "results.md").read_text()
    assert "| dense |" in table and "Leaderboard" not in table  # the leaderboard did not overwrite it
    assert (results / "reports" / "leaderboard-synthetic.md").read_text().startswith("Leaderboard: synthetic")

    assert main(["report", "--results", str(results), "--leaderboard", "synthetic", "--out", str(tmp_path / "lb.md")]) == 0
    assert (tmp_path / "lb.md").exists()
    assert not any((clone / "reports").iterdir()) and not (clone / "results").exists()
    assert _snapshot(REPO_REPORTS) == repo_reports
