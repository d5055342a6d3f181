"""`xmc-bench`: thin command line over the library (parse, call, print)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bench.errors import BenchError

DEFAULT_REPORT = "reports/results.md"


def cmd_run(args) -> int:
    from bench.config import field_docs, load_yaml, parse_override, resolve

    if args.help_config:
        for key, (type_name, default, doc) in field_docs().items():
            print(f"{key:32} {type_name:6} {default!r:>14}  {doc}")
        return 0
    given = dict(parse_override(o) for o in args.overrides)
    from_yaml = load_yaml(args.config) if args.config else {}
    if not (given.get("method") or from_yaml.get("method")):
        return _run_suite(args)
    from bench.experiment import run_experiment

    cfg = resolve(args.overrides, args.config)
    record = run_experiment(cfg, run_id=args.run_id, group=args.group)
    if record["status"] != "ok":
        print(f"run {record['run_id']} failed: {record['reason']}", file=sys.stderr)
        return 1
    metrics = " ".join(f"{k}={v:.4f}" for k, v in record["metrics"].items() if not k.startswith("R@"))
    print(f"{record['method']} L={record['num_labels']}: {metrics}")
    print(f"record appended to {Path(cfg.results_dir) / 'runs.jsonl'} (run {record['run_id']})")
    return 0


def _run_suite(args) -> int:
    from bench.config import resolve
    from bench.report import render_report
    from bench.sweep import DEFAULT_SUITE, run_suite

    if args.config:
        raise BenchError("--config without a method: name a method (method=NAME) in the file or on the line")
    group, records = run_suite(DEFAULT_SUITE, args.overrides)
    results_dir = resolve(DEFAULT_SUITE.expand(args.overrides)[0]).results_dir
    text = render_report(results_dir, group=group)
    out = Path(args.report)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"# Default suite\n\n{text}")
    print(text)
    print(f"table written to {out}")
    failed = [r for r in records if r.get("status") != "ok"]
    return 1 if failed else 0


def cmd_list(args) -> int:
    from bench import list_classifiers, list_methods
    from bench.data.catalog import DATASETS
    from bench.registry import get_method

    print("classifiers:", ", ".join(list_classifiers(args.pattern)))
    print("datasets:   ", ", ".join(DATASETS.names(args.pattern)))
    print("methods:")
    for name in list_methods(args.pattern):
        method = get_method(name)
        print(f"  {name:22} {method.description}")
        print(f"  {'':22} {' '.join(f'{k}={v}' for k, v in method.overrides.items())}")
    return 0


def cmd_report(args) -> int:
    from bench.report import render_report

    text = render_report(args.results, group=args.group)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    print(f"written to {out}")
    return 0


def cmd_evaluate(args) -> int:
    from bench.evaluation import evaluate_files

    metrics = evaluate_files(args.predictions, args.labels, args.train_labels, A=args.A, B=args.B, k=args.k)
    if args.json:
        print(json.dumps(metrics))
    else:
        for key, value in metrics.items():
            print(f"{key:10} {100 * value:7.2f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xmc-bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run one method (method=NAME) or, with no method, the default suite")
    run.add_argument("overrides", nargs="*", help="config overrides key=value, e.g. method=ffi-static data.num_labels=4096")
    run.add_argument("--config", help="YAML file of config keys (applied before the key=value overrides)")
    run.add_argument("--help-config", action="store_true", help="list every config key with its default")
    run.add_argument("--report", default="reports/suite.md", help="where the suite writes its table")
    run.add_argument("--run-id", default=None, help=argparse.SUPPRESS)
    run.add_argument("--group", default="", help=argparse.SUPPRESS)
    run.set_defaults(func=cmd_run)

    lst = sub.add_parser("list", help="registered classifiers, datasets and methods")
    lst.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'ffi*'")
    lst.set_defaults(func=cmd_list)

    rep = sub.add_parser("report", help="Markdown table of the recorded runs (method x labels)")
    rep.add_argument("--results", default="results", help="results directory holding runs.jsonl")
    rep.add_argument("--out", default=DEFAULT_REPORT, help="where to write the table")
    rep.add_argument("--group", default=None, help="only runs of this suite group")
    rep.set_defaults(func=cmd_report)

    ev = sub.add_parser("evaluate", help="metrics of a prediction file against a label file (XC sparse text format)")
    ev.add_argument("--predictions", required=True, help="scores, XC sparse format (num_rows num_cols header)")
    ev.add_argument("--labels", required=True, help="true labels, XC sparse format (':value' optional)")
    ev.add_argument("--train-labels", default=None, help="training labels for propensities (default: --labels)")
    ev.add_argument("--A", type=float, default=0.55, help="propensity parameter A")
    ev.add_argument("--B", type=float, default=1.5, help="propensity parameter B")
    ev.add_argument("--k", type=int, default=5, help="largest k")
    ev.add_argument("--json", action="store_true", help="print one JSON object (fractions)")
    ev.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except BenchError as err:
        print(f"xmc-bench: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
