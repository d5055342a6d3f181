"""Pure functions from run records to tables: records → pandas → Markdown."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bench.tracking import RECORDS_FILE, read_records

METRIC_COLUMNS = ("P@1", "P@3", "P@5", "PSP@1")


def records_frame(records) -> pd.DataFrame:
    """One row per finished (``ok``) run with the columns the tables use."""
    rows = []
    for r in records:
        if r.get("status") != "ok":
            continue
        memory, throughput = r.get("memory") or {}, r.get("throughput") or {}
        rows.append({
            "run_id": r["run_id"], "group": r.get("group", ""), "sweep": r.get("sweep", ""),
            "finished_at": r.get("finished_at", ""), "method": r["method"],
            "labels": r.get("num_labels"), "seed": r.get("seed"),
            **{m: (r.get("metrics") or {}).get(m) for m in METRIC_COLUMNS},
            "peak_bytes": memory.get("peak_bytes"),
            "classifier_bytes": (memory.get("classifier") or {}).get("total"),
            "train_samples_per_s": throughput.get("train_samples_per_s"),
            "wall_time_s": r.get("wall_time_s"),
        })
    return pd.DataFrame(rows)


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Method × labels: the latest run per (method, labels, seed), then the mean over seeds."""
    if frame.empty:
        return frame
    latest = frame.sort_values("finished_at").groupby(["method", "labels", "seed"], as_index=False).last()
    numeric = [*METRIC_COLUMNS, "peak_bytes", "classifier_bytes", "train_samples_per_s"]
    table = latest.groupby(["method", "labels"], as_index=False).agg(
        {**{c: "mean" for c in numeric}, "seed": "count"}
    ).rename(columns={"seed": "seeds"})
    return table.sort_values(["labels", "method"]).reset_index(drop=True)


def format_bytes(n: float | None) -> str:
    if n is None or pd.isna(n):
        return "–"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def to_markdown(table: pd.DataFrame) -> str:
    header = ["method", "labels", "P@1", "P@3", "P@5", "PSP@1", "peak memory",
              "classifier memory", "train samples/s", "seeds"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    pct = lambda v: "–" if v is None or pd.isna(v) else f"{100 * v:.2f}"  # noqa: E731
    for row in table.to_dict("records"):
        cells = [row["method"], f"{int(row['labels']):,}", *(pct(row[m]) for m in METRIC_COLUMNS),
                 format_bytes(row["peak_bytes"]), format_bytes(row["classifier_bytes"]),
                 f"{row['train_samples_per_s']:,.0f}", str(row["seeds"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def render_report(results_dir: str | Path, group: str | None = None, sweep: str | None = None) -> str:
    """Markdown report of the records in ``results_dir`` (optionally one suite group or one
    sweep only)."""
    frame = records_frame(read_records(Path(results_dir) / RECORDS_FILE))
    if group and not frame.empty:
        frame = frame[frame["group"] == group]
    if sweep and not frame.empty:
        frame = frame[frame["sweep"] == sweep]
    if frame.empty:
        return f"No finished runs in {Path(results_dir) / RECORDS_FILE}.\n"
    note = ("P@k and PSP@k in percent; peak memory is the peak RSS of the run's own process on CPU "
            "(allocator peak on CUDA); classifier memory is analytic (parameters, gradients, "
            "optimiser state, indices).\n")
    return to_markdown(summary_table(frame)) + "\n" + note
