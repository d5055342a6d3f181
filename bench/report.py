"""Pure functions from run records to tables and figures: records → pandas → Markdown /
LaTeX / HTML, and matplotlib PNG + SVG."""

from __future__ import annotations

import html
from importlib import resources
from pathlib import Path

import pandas as pd

from bench.record import METRIC_COLUMNS, PROBE_KEYS, probe_spread, read_records, records_frame, records_path

# column -> (header, formatter kind, which direction is better)
COLUMNS = {
    **{m: (m, "percent", "max") for m in METRIC_COLUMNS},
    "peak_bytes": ("peak memory", "bytes", "min"),
    "classifier_bytes": ("classifier memory", "bytes", "min"),
    "train_samples_per_s": ("train samples/s", "rate", "max"),
    "inference_samples_per_s": ("inference samples/s", "rate", "max"),
    "epoch_time_s": ("epoch time (s)", "seconds", "min"),
    "steady_step_s": ("steady step (ms)", "ms", "min"),
}
PROBE_COLUMNS = tuple(f"probe_{k}" for k in PROBE_KEYS)
THROUGHPUT_COLUMNS = ("train_samples_per_s", "inference_samples_per_s", "steady_step_s")  # cells marked when machine speeds differ
PROBE_TOLERANCE = 0.10  # machine-speed probes further apart than this are not a side-by-side comparison
MARK = "†"
NOTE = ("P@k and PSP@k in percent (mean ± std over seeds where there are several; best per label-space "
        "size in bold); seeds: how many runs (the latest of each seed) stand behind every number of the row; "
        "peak memory is the peak RSS of the run's own process on CPU (allocator peak on "
        "CUDA); classifier memory is analytic (parameters, gradients, optimiser state, indices); "
        "steady step: median training step once warm (first-use compilation left out).\n")
BEST_NOTE = ("Metrics are each run's best evaluated epoch (by its eval.select metric, test set), not its last "
             "(runs recorded without a best epoch show their last).\n")


def latest_per_seed(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The latest run (by ``finished_at``) of each ``keys`` × seed: a re-run replaces its
    seed's earlier run in every table and figure."""
    return frame.sort_values("finished_at").groupby([*keys, "seed"], as_index=False).last()


def best_values(table: pd.DataFrame, column: str) -> pd.Series:
    """Per row of ``table``, the best value of ``column`` among the rows of its (dataset, labels)."""
    better = COLUMNS[column][2]
    return table.groupby(["dataset", "labels"])[column].transform("max" if better == "max" else "min")


def summary_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Dataset × labels × method: the latest run per seed, then mean and std over seeds
    (columns ``X`` and ``X_std``)."""
    if frame.empty:
        return frame
    keys = ["dataset", "labels", "method"]
    probes = [c for c in PROBE_COLUMNS if c in frame]
    # None (a record without the key) as NaN, so that old and new records aggregate together
    frame = frame.assign(**{c: pd.to_numeric(frame[c]) for c in (*COLUMNS, *probes) if c in frame})
    grouped = latest_per_seed(frame, keys).groupby(keys, as_index=False)
    table = grouped.agg({c: "mean" for c in COLUMNS} | {c: "median" for c in probes})
    std = grouped.agg({c: "std" for c in COLUMNS})
    for c in COLUMNS:
        table[f"{c}_std"] = std[c]
    table["seeds"] = grouped.size()["size"]
    return table.sort_values(["dataset", "labels", "method"]).reset_index(drop=True)


def _probe(row) -> dict:
    return {k: row[f"probe_{k}"] for k in PROBE_KEYS if f"probe_{k}" in row and not pd.isna(row[f"probe_{k}"])}


def probe_marks(table: pd.DataFrame) -> pd.Series:
    """Per row of ``table``: whether its runs saw a machine more than ``PROBE_TOLERANCE`` faster or
    slower (median machine-speed probe) than the runs of the fastest row (train samples/s) of its
    (dataset, labels) — its throughput is then no side-by-side comparison. Rows without a probe
    (records older than probes) are not marked."""
    marks = pd.Series(False, index=table.index)
    for _, rows in table.groupby(["dataset", "labels"]):
        if rows["train_samples_per_s"].isna().all():
            continue
        reference = _probe(table.loc[rows["train_samples_per_s"].idxmax()])
        for i in rows.index:
            marks[i] = probe_spread([reference, _probe(table.loc[i])]) > PROBE_TOLERANCE
    return marks


def probe_note(table: pd.DataFrame) -> str:
    """The lines explaining the throughput marks, and which rows could not be checked."""
    lines = []
    if probe_marks(table).any():
        lines.append(f"{MARK} throughput measured on a machine running more than {PROBE_TOLERANCE:.0%} faster or "
                     "slower than for the fastest row of its dataset and label count (machine-speed probe: a fixed "
                     "GEMM and memory pass timed at each run's start and end): not a side-by-side comparison.\n")
    unprobed = sum(not _probe(row) for _, row in table.iterrows())
    if unprobed:
        lines.append(f"{unprobed} row(s) have no machine-speed probe (recorded before probes): "
                     "their throughput is not checked against the others.\n")
    return "".join(lines)


def format_bytes(n: float | None) -> str:
    if n is None or pd.isna(n):
        return "–"
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)} B"


def _cell(kind: str, value, std) -> str:
    if value is None or pd.isna(value):
        return "–"
    spread = std is not None and not pd.isna(std) and std > 0
    if kind == "percent":
        return f"{100 * value:.2f}" + (f" ± {100 * std:.2f}" if spread else "")
    if kind == "bytes":
        return format_bytes(value)
    if kind == "rate":
        return f"{value:,.0f}"
    if kind == "ms":
        return f"{1000 * value:.1f}"
    return f"{value:.1f}"


def table_cells(table: pd.DataFrame) -> tuple[list[str], list[list[tuple[str, bool]]]]:
    """Header and rows of ``(text, is_best)`` cells; best is per (dataset, labels) group."""
    multi_dataset = table["dataset"].nunique() > 1
    header = (["dataset"] if multi_dataset else []) + ["method", "labels"] + [h for h, _, _ in COLUMNS.values()] + ["seeds"]
    best = {column: best_values(table, column) for column in COLUMNS}
    marks = probe_marks(table)
    rows = []
    for i, row in table.iterrows():
        cells = ([(str(row["dataset"]), False)] if multi_dataset else []) + [
            (str(row["method"]), False), (f"{int(row['labels']):,}", False)]
        several = (table[(table["dataset"] == row["dataset"]) & (table["labels"] == row["labels"])].shape[0]) > 1
        for column, (_, kind, _) in COLUMNS.items():
            is_best = several and not pd.isna(row[column]) and row[column] == best[column][i]
            text = _cell(kind, row[column], row[f"{column}_std"])
            if marks[i] and column in THROUGHPUT_COLUMNS and text != "–":
                text += f" {MARK}"
            cells.append((text, is_best))
        cells.append((str(row["seeds"]), False))
        rows.append(cells)
    return header, rows


def to_markdown(table: pd.DataFrame) -> str:
    header, rows = table_cells(table)
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for cells in rows:
        lines.append("| " + " | ".join(f"**{t}**" if b else t for t, b in cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(table: pd.DataFrame) -> str:
    header, rows = table_cells(table)
    esc = lambda t: (t.replace("%", r"\%").replace("_", r"\_").replace("±", r"$\pm$")  # noqa: E731
                     .replace(MARK, r"$^\dagger$").replace("@", "@"))
    lines = [r"\begin{tabular}{" + "l" * 2 + "r" * (len(header) - 2) + "}", r"\toprule",
             " & ".join(esc(h) for h in header) + r" \\", r"\midrule"]
    for cells in rows:
        lines.append(" & ".join(rf"\textbf{{{esc(t)}}}" if b else esc(t) for t, b in cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def to_html(table: pd.DataFrame) -> str:
    header, rows = table_cells(table)
    out = ["<table>", "<thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for cells in rows:
        out.append("<tr>" + "".join(f"<td><b>{html.escape(t)}</b></td>" if b else f"<td>{html.escape(t)}</td>"
                                    for t, b in cells) + "</tr>")
    out += ["</tbody>", "</table>"]
    return "\n".join(out) + "\n"


RENDERERS = {"md": to_markdown, "latex": to_latex, "html": to_html}


def load_frame(results_dir: str | Path, group: str | None = None, sweep: str | None = None,
               select: str = "last") -> pd.DataFrame:
    """The ok records of ``results_dir`` as a table; metric columns from each run's ``select``
    epoch (``last`` or ``best``, see ``bench.record.selected_metrics``)."""
    frame = records_frame(read_records(records_path(results_dir)), select)
    if group and not frame.empty:
        frame = frame[frame["group"] == group]
    if sweep and not frame.empty:
        frame = frame[frame["sweep"] == sweep]
    return frame


def render_report(results_dir: str | Path, group: str | None = None, sweep: str | None = None,
                  fmt: str = "md", select: str = "last") -> str:
    """The report of the records in ``results_dir`` (optionally one suite group or one sweep),
    with each run's ``select`` epoch's metrics (``last`` or ``best``)."""
    frame = load_frame(results_dir, group, sweep, select)
    if frame.empty:
        return f"No finished runs in {records_path(results_dir)}.\n"
    table = summary_table(frame)
    return RENDERERS[fmt](table) + ("\n" + NOTE + (BEST_NOTE if select == "best" else "") + probe_note(table)
                                    if fmt == "md" else "")


def pivot_markdown(frame: pd.DataFrame, columns: list[str]) -> str:
    """One Markdown table per column of ``COLUMNS``: methods down, label-space sizes across
    (the layout of the paper's scaling figure), mean ± std over seeds, best per size in bold."""
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise ValueError(f"--pivot takes {', '.join(COLUMNS)}; got {', '.join(unknown)}")
    table = summary_table(frame)
    marks = probe_marks(table)
    sizes = sorted(table["labels"].unique())
    several = table["dataset"].nunique() > 1
    out = []
    for column in columns:
        header, kind, _ = COLUMNS[column]
        best = best_values(table, column)
        lines = [f"**{header}**\n", "| method | " + " | ".join(f"L = {int(n):,}" for n in sizes) + " |",
                 "|---|" + "---|" * len(sizes)]
        for (dataset, method), rows in table.groupby(["dataset", "method"], sort=False):
            cells = []
            for n in sizes:
                hit = rows[rows["labels"] == n]
                if hit.empty:
                    cells.append("–")
                    continue
                i = hit.index[0]
                text = _cell(kind, table.at[i, column], table.at[i, f"{column}_std"])
                if marks[i] and column in THROUGHPUT_COLUMNS and text != "–":
                    text += f" {MARK}"
                cells.append(f"**{text}**" if table.at[i, column] == best[i] else text)
            lines.append(f"| {f'{dataset}/' if several else ''}{method} | " + " | ".join(cells) + " |")
        out.append("\n".join(lines) + "\n")
    if marks.any() and set(columns) & set(THROUGHPUT_COLUMNS):
        out.append(probe_note(table))
    return "\n".join(out)


BASELINES_CSV = resources.files("bench") / "baselines" / "published.csv"  # package data: a Path once installed


def leaderboard(frame: pd.DataFrame, dataset: str, baselines_csv: str | Path = BASELINES_CSV) -> str:
    """Our runs on ``dataset`` beside the published rows of ``baselines/published.csv``, sorted
    by P@1, with each row's P@k difference to the best published one."""
    published = pd.read_csv(baselines_csv) if Path(baselines_csv).exists() else pd.DataFrame()
    published = published[published["dataset"].str.lower() == dataset.lower()] if not published.empty else published
    ours = frame[frame["dataset"].str.lower() == dataset.lower()] if not frame.empty else frame
    rows = []
    for _, r in published.iterrows():
        rows.append({"method": r["method"], "source": "published" + ("" if str(r.get("checked", "")).lower() == "yes"
                                                                     else " (unchecked)"),
                     **{m: r[m] / 100 for m in ("P@1", "P@3", "P@5")}})
    if not ours.empty:
        table = summary_table(ours)
        for _, r in table.iterrows():
            rows.append({"method": r["method"], "source": f"this suite ({int(r['seeds'])} seed(s))",
                         **{m: r[m] for m in ("P@1", "P@3", "P@5")}})
    if not rows:
        return f"No published rows and no runs for dataset {dataset!r}.\n"
    board = pd.DataFrame(rows).sort_values("P@1", ascending=False)
    best = published[["P@1", "P@3", "P@5"]].max() / 100 if not published.empty else None
    lines = ["| method | source | P@1 | P@3 | P@5 | ΔP@1 | ΔP@3 | ΔP@5 |", "|---|---|---|---|---|---|---|---|"]
    for _, r in board.iterrows():
        deltas = [f"{100 * (r[m] - best[m]):+.2f}" if best is not None else "–" for m in ("P@1", "P@3", "P@5")]
        lines.append(f"| {r['method']} | {r['source']} | " + " | ".join(f"{100 * r[m]:.2f}" for m in ("P@1", "P@3", "P@5"))
                     + " | " + " | ".join(deltas) + " |")
    return (f"Leaderboard: {dataset} (Δ: difference to the best published value, percentage points)\n\n"
            + "\n".join(lines) + "\n")
