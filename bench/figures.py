"""Figures from run records (matplotlib, PNG + SVG): accuracy, memory and throughput against
label-space size, accuracy against sparsity, training curves, and the encoder's gradient norm
over training (the paper's gradient-flow figure)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from bench.report import latest_per_seed, summary_table  # noqa: E402


def _save(fig, out_dir: Path, name: str) -> list[Path]:
    paths = [out_dir / f"{name}.png", out_dir / f"{name}.svg"]
    for path in paths:
        fig.savefig(path, bbox_inches="tight", dpi=120)
    plt.close(fig)
    return paths


def _by_method(ax, table: pd.DataFrame, column: str, scale: float = 1.0):
    several = table["dataset"].nunique() > 1
    for (dataset, method), rows in table.groupby(["dataset", "method"]):
        rows = rows.sort_values("labels")
        ax.errorbar(rows["labels"], rows[column] * scale, yerr=rows[f"{column}_std"].fillna(0) * scale,
                    marker="o", capsize=3, label=f"{dataset}/{method}" if several else method)
    ax.set_xscale("log")
    ax.set_xlabel("labels L")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def render_figures(frame: pd.DataFrame, out_dir: str | Path) -> list[Path]:
    """Write every figure the records support; returns the written paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if frame.empty:
        return []
    table = summary_table(frame)
    written = []
    for column, ylabel, name, log_y, scale in (
        ("P@1", "P@1 (%)", "p1_vs_labels", False, 100.0),
        ("peak_bytes", "peak memory (bytes)", "peak_memory_vs_labels", True, 1.0),
        ("classifier_bytes", "classifier memory (bytes, analytic)", "classifier_memory_vs_labels", True, 1.0),
        ("train_samples_per_s", "training samples/s", "throughput_vs_labels", True, 1.0),
    ):
        fig, ax = plt.subplots(figsize=(6, 4))
        _by_method(ax, table, column, scale)
        ax.set_ylabel(ylabel)
        if log_y:
            ax.set_yscale("log")
        written += _save(fig, out_dir, name)

    sparse = frame[frame["method"].str.startswith("ffi") & frame["fan_in"].notna()]
    if sparse["fan_in"].nunique() > 1:
        fig, ax = plt.subplots(figsize=(6, 4))
        for (method, labels), rows in sparse.groupby(["method", "labels"]):
            rows = rows.assign(sparsity=1 - rows["fan_in"] / rows["embed_dim"]).groupby("sparsity")["P@1"].mean()
            ax.plot(rows.index * 100, rows.values * 100, marker="o", label=f"{method} L={labels:,}")
        ax.set_xlabel("sparsity (%)")
        ax.set_ylabel("P@1 (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        written += _save(fig, out_dir, "p1_vs_sparsity")

    fig, ax = plt.subplots(figsize=(6, 4))
    latest = frame.sort_values("finished_at").groupby(["method", "labels"]).last().reset_index()
    for _, run in latest[latest["labels"] == latest["labels"].max()].iterrows():
        points = [(e["step"], e["metrics"]["P@1"]) for e in run["epochs"] if "metrics" in e]
        if points:
            ax.plot(*zip(*[(s, 100 * p) for s, p in points]), marker="o", label=run["method"])
    ax.set_xlabel("step")
    ax.set_ylabel("test P@1 (%)")
    ax.set_title(f"training curves, L={int(latest['labels'].max()):,}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    written += _save(fig, out_dir, "training_curves")
    written += _gradient_flow(frame, out_dir)
    return written


def _gradient_flow(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Encoder gradient norm against step at the largest label space, one line per method (the
    mean over seeds where the runs share their logging steps; the latest run otherwise)."""
    if "gradient_flow" not in frame:
        return []
    runs = frame[frame["gradient_flow"].map(lambda g: bool(g.get("steps")))]
    if runs.empty:
        return []
    runs = runs[runs["labels"] == runs["labels"].max()]
    runs = latest_per_seed(runs, ["method"])  # as in the tables
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, rows in runs.sort_values("finished_at").groupby("method"):
        series = [(tuple(g["steps"]), g["encoder_grad_norm"]) for g in rows["gradient_flow"]]
        steps = series[-1][0]
        same = [norms for s, norms in series if s == steps]
        mean = [sum(values) / len(values) for values in zip(*same)]
        ax.plot(steps, mean, label=f"{method} (n={len(same)})" if len(same) > 1 else method)
    ax.set_xlabel("step")
    ax.set_ylabel("encoder gradient norm")
    ax.set_yscale("log")
    ax.set_title(f"gradient flow into the encoder, L={int(runs['labels'].max()):,}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "encoder_grad_norm")
