"""`xmc-bench`: thin command line over the library (parse, call, print)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from bench.errors import BenchError


def _default_out(results_dir: str | Path, name: str) -> Path:
    """Where a command writes its rendered table unless told (--report/--out): beside the
    records it renders, never the repository's reports/ (those are hand-written study pages)."""
    return Path(results_dir) / "reports" / name


def cmd_run(args) -> int:
    from bench.config import describe_keys, load_yaml, parse_override
    from bench.resolve import resolve

    if args.help_config:
        print("\n".join(describe_keys()))
        return 0
    given = dict(parse_override(o) for o in args.overrides)
    from_yaml = load_yaml(args.config) if args.config else {}
    if not (args.single or args.preset or given.get("method") or from_yaml.get("method")):
        return _run_suite(args)
    from bench.experiment import run_experiment
    from bench.record import records_path

    cfg = resolve(args.overrides, args.config, preset=args.preset)
    record = run_experiment(cfg, run_id=args.run_id, group=args.group, sweep=args.sweep)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 reports the run
        return 0 if record["status"] == "ok" else 1
    if record["status"] != "ok":
        where = f" at step {record['failed_at_step']}" if "failed_at_step" in record else ""
        print(f"run {record['run_id']} failed: {record['reason']}{where}", file=sys.stderr)
        return 1
    metrics = " ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items() if not k.startswith("R@"))
    print(f"{record['method']} L={record['num_labels']}: {metrics}")
    print(f"record appended to {records_path(cfg.results_dir)} (run {record['run_id']})")
    return 0


def _write_report(out: Path, text: str, heading: str = "") -> None:
    """Write a rendered table (under an optional heading) and show it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(heading + text)
    print(text)
    print(f"table written to {out}")


def _run_suite(args) -> int:
    from bench.resolve import resolve
    from bench.report import render_report
    from bench.sweep import DEFAULT_SWEEP, load_sweep, run_configs

    if args.config:
        raise BenchError("--config without a method: name a method (method=NAME) in the file or on the line")
    spec = load_sweep(DEFAULT_SWEEP)
    runs = spec.expand(args.overrides)
    group, records, _ = run_configs(spec.name, runs)
    results_dir = resolve(runs[0]).results_dir
    _write_report(Path(args.report or _default_out(results_dir, "suite.md")), render_report(results_dir, group=group),
                  "# Default suite\n\n")
    failed = [r for r in records if r.get("status") != "ok"]
    return 1 if failed else 0


def cmd_sweep(args) -> int:
    from bench.resolve import resolve
    from bench.report import render_report
    from bench.sweep import list_sweeps, load_sweep, run_configs

    if args.list or not args.sweep:
        for name in list_sweeps():
            spec = load_sweep(name)
            print(f"{name:18} {len(spec.expand([])):4} runs  {spec.description}")
        return 0
    spec = load_sweep(args.sweep)
    runs = spec.expand(args.overrides)
    if args.wandb:
        from bench.executors import register_wandb_sweep

        sweep_id = register_wandb_sweep(spec.name, runs, resolve(runs[0]).tracking.project)
        print(f"registered W&B sweep {sweep_id} ({len(runs)} configurations); run agents with: xmc-bench agent {sweep_id}")
        return 0
    if args.executor == "submitit":
        from bench.executors import submit_sweep

        folder = args.submitit_dir or Path(resolve(runs[0]).results_dir) / "submitit"
        jobs, records = submit_sweep(spec.name, runs, folder, cluster=args.cluster,
                                     parallelism=args.workers, skip_finished=not args.no_skip)
        print(f"submitted {len(jobs)} jobs ({', '.join(j.job_id for j in jobs[:3])}{', ...' if len(jobs) > 3 else ''})")
        skipped = len(runs) - len(jobs)
    else:
        group, records, skipped = run_configs(spec.name, runs, workers=args.workers, skip_finished=not args.no_skip)
    print(f"sweep {spec.name}: {len(runs)} configurations, {skipped} already finished or running elsewhere (skipped), "
          f"{len(records)} run, {sum(r.get('status') != 'ok' for r in records)} failed")
    results_dir = resolve(runs[0]).results_dir
    _write_report(Path(args.report or _default_out(results_dir, f"{spec.name}.md")),
                  render_report(results_dir, sweep=spec.name),
                  f"# Sweep `{spec.name}`\n\n{spec.description}\n\n")
    return 1 if any(r.get("status") != "ok" for r in records) else 0


def cmd_agent(args) -> int:
    from bench.executors import run_wandb_agent

    run_wandb_agent(args.sweep_id, count=args.count)
    return 0


def cmd_list(args) -> int:
    from bench import list_classifiers, list_methods
    from bench.data.catalog import DATASETS
    from bench.methods import get_method
    from bench.resolve import list_presets, load_preset

    print("classifiers:", ", ".join(list_classifiers(args.pattern)))
    print("datasets:   ", ", ".join(DATASETS.names(args.pattern)))
    print("methods:")
    for name in list_methods(args.pattern):
        method = get_method(name)
        print(f"  {name:22} {method.description}")
        print(f"  {'':22} {' '.join(f'{k}={v}' for k, v in method.overrides.items())}")
    print("presets (xmc-bench run --preset NAME data.path=DIR model.encoder_path=DIR):")
    for name in list_presets(args.pattern):
        print(f"  {name:28} {load_preset(name).description}")
    return 0


def cmd_report(args) -> int:
    from bench.record import existing_records_path
    from bench.report import render_report

    existing_records_path(args.results)  # a mistyped --results is an error, not an empty report
    if args.leaderboard:
        from bench.report import leaderboard, load_frame

        text = leaderboard(load_frame(args.results, args.group, args.sweep, args.select), args.leaderboard)
        name = f"leaderboard-{Path(args.leaderboard).stem}.md"
    elif args.pivot:
        from bench.report import load_frame, pivot_markdown

        frame = load_frame(args.results, args.group, args.sweep, args.select)
        if frame.empty:
            raise BenchError(f"no finished runs in {args.results} to pivot")
        try:
            text = pivot_markdown(frame, args.pivot)
        except ValueError as err:
            raise BenchError(str(err)) from None
        name = "pivot.md"
    else:
        text = render_report(args.results, group=args.group, sweep=args.sweep, fmt=args.format, select=args.select)
        name = "results" + {"md": ".md", "latex": ".tex", "html": ".html"}[args.format]
    _write_report(Path(args.out or _default_out(args.results, name)), text)
    if args.figures:
        from bench.figures import render_figures
        from bench.report import load_frame

        paths = render_figures(load_frame(args.results, args.group, args.sweep, args.select), args.figures)
        print(f"{len(paths)} figure files written to {args.figures}")
    return 0


def cmd_evaluate(args) -> int:
    from bench.evaluation import evaluate_files

    metrics = evaluate_files(args.predictions, args.labels, args.train_labels, A=args.A, B=args.B, k=args.k,
                             filter_path=args.filter)
    if args.json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key:10} {100 * value:7.2f}")
    return 0


def cmd_data(args) -> int:
    from bench.config import DataConfig, parse_override
    from bench.resolve import resolve
    from bench.data import cache, catalog

    overrides = dict(parse_override(o) for o in args.overrides)
    bad = [k for k in overrides if not k.startswith("data.")]
    if bad:
        raise BenchError(f"`xmc-bench data` takes only data.* overrides, got {', '.join(bad)}")
    overrides["data.name"] = args.name
    if args.path:
        overrides["data.path"] = args.path
    if args.cache_dir:
        overrides["data.cache_dir"] = args.cache_dir
    cfg: DataConfig = resolve(overrides).data
    if args.data_command == "prepare":
        print(f"preparing {cfg.name} into {cache.cache_path(cfg)}")
        folder = catalog.prepare(cfg)
        print(f"cached {cfg.name} at {folder}; `xmc-bench run data={cfg.name}` now loads it from there")
        return 0
    meta = cache.read_meta(cache.cache_path(cfg))
    if meta is not None and meta.get("data_config") == cache.cache_key(cfg):
        stats, where = meta["statistics"], f"cache {cache.cache_path(cfg)}"
        counts = cache.load_label_table(cache.cache_path(cfg))["train_count"]
        propensity = {**meta["propensity"], "card": meta.get("card")}
    else:
        from bench.data.cards import card_propensity
        from bench.data.catalog import load_dataset

        dataset = load_dataset(cfg)
        stats, where = cache.label_statistics(dataset), dataset.meta.get("source", "built in")
        counts = dataset.train_y.column_counts()
        propensity = card_propensity(cfg.name)
    if args.json:
        print(json.dumps({"name": cfg.name, "from": str(where), **stats, "propensity": propensity}))
    else:
        print(f"{cfg.name}  (from {where})")
        for key, value in stats.items():
            print(f"  {key:42} {value:.4g}" if isinstance(value, float) else f"  {key:42} {value}")
        print(f"  {'propensity A, B':42} {propensity['A']}, {propensity['B']}  "
              f"({'card ' + propensity['card'] if propensity['card'] else 'no card: default'})")
    if args.plot:
        _plot_label_frequencies(counts, cfg.name, Path(args.plot))
        print(f"label-frequency plot written to {args.plot}")
    return 0


def cmd_data_card(args) -> int:
    from bench.data.cards import load_card
    from bench.data.make_card import make_card

    files = {"train": args.train, "test": args.test, "xml": args.xml, "test_filter": args.test_filter,
             "texts": args.texts}
    out = make_card(args.name, args.format, files, out_dir=args.out, features=args.features, title=args.title,
                    labels_by=args.labels_by, A=args.A, B=args.B)
    card = load_card(str(out))
    print(f"card written to {out}")
    for key, value in card["statistics"].items():
        print(f"  {key:22} {value}")
    print(f"  {'propensity A, B':22} {card['propensity']['A']}, {card['propensity']['B']}"
          f"{'  (default)' if (args.A, args.B) == (0.55, 1.5) else ''}")
    print(f"run it with: xmc-bench run method=dense data={out}")
    return 0


def _plot_label_frequencies(counts, name: str, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    freq = np.sort(np.asarray(counts))[::-1]
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.loglog(np.arange(1, len(freq) + 1), np.maximum(freq, 0.5), lw=1.5)
    ax.set(xlabel="label rank", ylabel="training points", title=f"{name}: label frequencies")
    ax.grid(True, which="both", alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight", dpi=120)
    plt.close(fig)


def _print_table_header(header: str) -> None:
    """A Markdown table's header row and its separator, sized to the header's columns."""
    print(header)
    print("|" + "|".join("-" * len(c) for c in header.split("|")[1:-1]) + "|")


def cmd_kernels(args) -> int:
    from bench.bench_kernels import HEADER, run_kernels

    if args.step_memory:
        return _step_memory(args)
    if args.topk:
        return _topk_table(args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.step:
        return _steps(args)
    _print_table_header(HEADER)
    rows = run_kernels(batch=args.batch, dim=args.dim, fan_ins=args.fan_in, labels=args.labels, dtype=args.dtype,
                       device=args.device, warmup=args.warmup, repeats=args.repeats, max_gb=args.max_gb,
                       layers=args.layers, out_dir=args.out)
    if any(r.skipped for r in rows):
        print("skipped rows would not fit in memory (raise --max-gb to try them)")
    print(f"records appended to {Path(args.out) / 'kernels.jsonl'}")
    return 0


def _topk_table(args) -> int:
    import torch

    from bench.bench_kernels import TOPK_HEADER, run_topk

    if args.threads:
        torch.set_num_threads(args.threads)
    _print_table_header(TOPK_HEADER)
    run_topk(batch=args.topk_batch, dim=args.topk_dim, labels=args.topk_labels, fan_in=args.topk_fan_in,
             k=args.topk_k, warmup=args.warmup, repeats=args.repeats, layers=args.layers, device=args.device,
             dtype=args.dtype, out_dir=args.out)
    print(f"records appended to {Path(args.out) / 'kernels.jsonl'}")
    return 0


def _steps(args) -> int:
    from bench.bench_kernels import STEP_HEADER, run_steps

    _print_table_header(STEP_HEADER)
    rows = run_steps(batch=args.batch, dim=args.dim, fan_ins=args.fan_in, labels=args.labels, dtype=args.dtype,
                     loss=args.loss, reduction=args.reduction, warmup=args.warmup, repeats=args.repeats,
                     max_gb=args.max_gb, layers=args.layers, device=args.device, out_dir=args.out)
    if any(r.skipped for r in rows):
        print("skipped rows would not fit in memory (raise --max-gb to try them)")
    print(f"records appended to {Path(args.out) / 'kernels.jsonl'}")
    return 0


def _step_memory(args) -> int:
    from bench.bench_kernels import _available_gb
    from bench.step_memory import HEADER, run_step_memory

    _print_table_header(HEADER)
    run_step_memory(args.labels, args.fan_in, args.dim, args.batch, layers=args.layers, threads=args.threads,
                    max_gb=args.max_gb if args.max_gb is not None else 0.6 * _available_gb(), out_dir=args.out)
    print(f"records appended to {Path(args.out) / 'step_memory.jsonl'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmc-bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one method (method=NAME) or, with no method, the default suite")
    run.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. method=ffi-static data.num_labels=4096")
    run.add_argument("--config", help="YAML file of config keys (applied before the key=value overrides, "
                                      "wherever it stands among them)")
    run.add_argument("--preset", default=None, metavar="NAME",
                     help="a shipped configuration, e.g. paper/wiki10-31k (`xmc-bench list`): after the method and "
                          "the card's recommended settings, before --config and the key=value overrides")
    run.add_argument("--help-config", action="store_true",
                     help="list every config key with its type, default, meaning and allowed values")
    run.add_argument("--report", default=None, help="where the suite writes its table (default RESULTS_DIR/reports/suite.md)")
    run.add_argument("--single", action="store_true", help=argparse.SUPPRESS)  # a sweep child: this config only
    run.add_argument("--run-id", default=None, help=argparse.SUPPRESS)
    run.add_argument("--group", default="", help=argparse.SUPPRESS)
    run.add_argument("--sweep", default="", help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    sw = sub.add_parser("sweep", help="run a sweep file or a shipped sweep (skips configurations already recorded ok)")
    sw.add_argument("sweep", nargs="?", help="shipped sweep name (see --list) or a YAML file")
    sw.add_argument("overrides", nargs="*", help="key=value overrides applied to every run of the sweep")
    sw.add_argument("--list", action="store_true", help="list the shipped sweeps")
    sw.add_argument("--workers", type=int, default=1, help="configurations run in parallel (one process each)")
    sw.add_argument("--no-skip", action="store_true", help="run configurations even if an ok record exists")
    sw.add_argument("--report", default=None, help="where to write the sweep's table (default RESULTS_DIR/reports/NAME.md)")
    sw.add_argument("--executor", choices=("local", "submitit"), default="local",
                    help="local processes, or a Slurm job array through submitit")
    sw.add_argument("--cluster", default=None, help="submitit cluster: slurm, local, debug (default: detected)")
    sw.add_argument("--submitit-dir", default=None, help="submitit job folder (logs, pickles; default RESULTS_DIR/submitit)")
    sw.add_argument("--wandb", action="store_true", help="register the sweep with W&B for `xmc-bench agent`")
    sw.set_defaults(func=cmd_sweep)

    ag = sub.add_parser("agent", help="run as a W&B sweep agent (local records decide what already ran)")
    ag.add_argument("sweep_id", help="the id printed by `xmc-bench sweep FILE --wandb`")
    ag.add_argument("--count", type=int, default=None, help="stop after this many configurations")
    ag.set_defaults(func=cmd_agent)

    lst = sub.add_parser("list", help="registered classifiers, datasets and methods")
    lst.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'ffi*'")
    lst.set_defaults(func=cmd_list)

    rep = sub.add_parser("report", help="Markdown table of the recorded runs (method x labels)")
    rep.add_argument("--results", default="results", help="results directory holding runs.jsonl")
    rep.add_argument("--out", default=None,
                     help="where to write the table (default RESULTS/reports/results.md, suffix by format; "
                          "leaderboard-DATASET.md with --leaderboard, pivot.md with --pivot)")
    rep.add_argument("--format", choices=("md", "latex", "html"), default="md", help="table format")
    rep.add_argument("--leaderboard", default=None, metavar="DATASET",
                     help="our runs on DATASET beside the published numbers in baselines/published.csv")
    rep.add_argument("--figures", default=None, metavar="DIR", help="also write the figures (PNG + SVG) to DIR")
    rep.add_argument("--pivot", nargs="+", default=None, metavar="COLUMN",
                     help="Markdown tables of method x label-space size instead, one per column "
                          "(P@1 P@3 P@5 PSP@1 PSP@3 PSP@5 peak_bytes classifier_bytes train_samples_per_s "
                          "inference_samples_per_s epoch_time_s)")
    rep.add_argument("--group", default=None, help="only runs of this suite group")
    rep.add_argument("--sweep", default=None, help="only runs of this sweep (by name)")
    rep.add_argument("--select", choices=("last", "best"), default="last",
                     help="which epoch's metrics the tables show: the last, or the best by each run's eval.select "
                          "(a record without a best epoch shows its last)")
    rep.set_defaults(func=cmd_report)

    ev = sub.add_parser("evaluate", help="metrics of a prediction file against a label file (XC sparse text format)")
    ev.add_argument("--predictions", required=True, help="scores, XC sparse format (num_rows num_cols header)")
    ev.add_argument("--labels", required=True, help="true labels, XC sparse format (':value' optional)")
    ev.add_argument("--train-labels", default=None, help="training labels for propensities (default: --labels)")
    ev.add_argument("--A", type=float, default=0.55, help="propensity parameter A")
    ev.add_argument("--B", type=float, default=1.5, help="propensity parameter B")
    ev.add_argument("--k", type=int, default=5, help="largest k")
    ev.add_argument("--filter", default=None, help="'doc label' pairs (0-based) removed from the predictions before top-k")
    ev.add_argument("--json", action="store_true", help="print one JSON object (fractions)")
    ev.set_defaults(func=cmd_evaluate)

    ker = sub.add_parser("kernels", help="time fixed fan-in backends against dense, masked and torch CSR layers")
    ker.add_argument("--labels", type=int, nargs="+", default=[16384, 131072, 1048576], help="label counts L")
    ker.add_argument("--fan-in", type=int, nargs="+", default=[16, 32, 64], help="fan-ins k")
    ker.add_argument("--batch", type=int, default=256, help="batch size B")
    ker.add_argument("--dim", type=int, default=768, help="input size d")
    ker.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="values and inputs")
    ker.add_argument("--device", default="cpu", help="cpu or cuda")
    ker.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ker.add_argument("--warmup", type=int, default=1, help="untimed runs first")
    ker.add_argument("--repeats", type=int, default=5, help="timed runs (the median is reported)")
    ker.add_argument("--max-gb", type=float, default=None, help="skip layers estimated above this (default: 60%% of free RAM)")
    ker.add_argument("--layers", nargs="+", default=None,
                     help="dense masked csr ffi ffi/cpu ffi/reference ffi/triton ffi-group ffi-group/g32 "
                          "(default: all but ffi/reference)")
    ker.add_argument("--step-memory", action="store_true",
                     help="instead of timing ops: peak memory of full training steps (fused and unfused loss, "
                          "SGD momentum) of --layers ffi/dense against their analytic state, one process each")
    ker.add_argument("--topk", action="store_true",
                     help="instead of timing ops: Classifier.topk against scoring alone (selection time ÷ "
                          "scoring time) for --layers dense ffi ffi/torch ffi-group (g32), at the --topk-* sizes")
    ker.add_argument("--topk-labels", type=int, nargs="+", default=[262144], help="--topk: label counts L")
    ker.add_argument("--topk-dim", type=int, default=256, help="--topk: input size d")
    ker.add_argument("--topk-batch", type=int, default=1024, help="--topk: points scored at once")
    ker.add_argument("--topk-fan-in", type=int, default=32, help="--topk: the ffi layer's fan-in")
    ker.add_argument("--topk-k", type=int, default=5, help="--topk: labels kept per point")
    ker.add_argument("--step", action="store_true",
                     help="instead of the layer table: full training steps (loss over sparse targets, backward, "
                          "SGD-momentum update) of dense, ffi/cpu and ffi-group/g32 with the fused kernel loss, "
                          "and ffi/cpu-torchloss (the loss in torch between the kernels), round-robin with dense; "
                          "on --device cuda the Triton kernels (ffi/triton, ffi/triton-torchloss)")
    ker.add_argument("--loss", default="bce", choices=["bce", "squared_hinge"], help="the --step table's loss")
    ker.add_argument("--reduction", default="sum_over_labels", choices=["sum_over_labels", "mean", "sum"],
                     help="the --step table's loss reduction")
    ker.add_argument("--out", default="results/kernels", help="directory of kernels.jsonl / step_memory.jsonl")
    ker.set_defaults(func=cmd_kernels)

    data = sub.add_parser("data", help="prepare (check and cache) or describe a dataset")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    for command, text in (("prepare", "validate a dataset against its card and cache it as Arrow files"),
                          ("info", "print a dataset's statistics (from its cache when prepared)")):
        cmd = data_sub.add_parser(command, help=text)
        cmd.add_argument("name", help="registered dataset, e.g. bibtex (`xmc-bench list`), or a card file path/NAME.yaml")
        cmd.add_argument("overrides", nargs="*", help="data.* overrides, e.g. data.split_seed=1")
        cmd.add_argument("--path", default="", help="folder holding the dataset's files (data.path)")
        cmd.add_argument("--cache-dir", default="", help="cache root (data.cache_dir)")
        if command == "info":
            cmd.add_argument("--plot", default="", help="also write a label-frequency plot (PNG/SVG) here")
            cmd.add_argument("--json", action="store_true", help="print one JSON object")
        cmd.set_defaults(func=cmd_data)
    card = data_sub.add_parser("card", help="write a card for your own dataset's files (then run it with data=CARD)")
    card.add_argument("--format", required=True, choices=("arff", "xc-bow", "xc-split", "lf"),
                      help="arff (MULAN ARFF + .xml), xc-bow (XC BoW file), xc-split (trn_X_Xf.txt + trn_X_Y.txt ...), "
                           "lf (xc-split + raw text JSON lines)")
    card.add_argument("--name", required=True, help="the dataset's name in records and reports")
    card.add_argument("--train", required=True, help="the training file (xc-split/lf: its prefix or its _X_Xf.txt)")
    card.add_argument("--test", default="", help="the test file; without it the test split is a seeded 20%% draw")
    card.add_argument("--xml", default="", help="arff: the MULAN .xml label list")
    card.add_argument("--labels-by", default="", choices=("", "name", "last"),
                      help="arff: labels are the attributes the .xml names (default) or the last N")
    card.add_argument("--texts", nargs=3, default=None, metavar=("TRAIN", "TEST", "LABELS"),
                      help="lf: the raw text JSON lines files")
    card.add_argument("--test-filter", default="", help="file of (test point, label) pairs removed from predictions")
    card.add_argument("--features", default="", choices=("", "tfidf", "l2", "as-is"),
                      help="feature weighting (default tfidf for arff/xc-bow, l2 for xc-split/lf)")
    card.add_argument("--title", default="", help="a longer name for reports (default: --name)")
    card.add_argument("--A", type=float, default=0.55, help="propensity A (default: Jain et al.'s 0.55)")
    card.add_argument("--B", type=float, default=1.5, help="propensity B (default: Jain et al.'s 1.5)")
    card.add_argument("--out", default="", help="folder to write NAME.yaml in (default: the files' folder)")
    card.set_defaults(func=cmd_data_card)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line. ``key=value`` overrides may stand anywhere among the options
    (argparse alone takes only the first run of them); they keep their order."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or not hasattr(args, "overrides")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return args.func(args)
    except BenchError as err:
        print(f"xmc-bench: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)  # a run locked by another process: 75, which a sweep counts as skipped
    except BrokenPipeError:  # the output went to a reader that stopped early (`xmc-bench list | head`)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
