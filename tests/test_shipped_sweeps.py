"""Shipped sweeps reproduce the studies in reports/: each sweep expands to exactly the configs
recorded in its results folder (same config hashes), so `xmc-bench sweep NAME` with
`results_dir=results/NAME` skips them all as finished and a rerun elsewhere repeats them."""

import json
from pathlib import Path

import pytest

from bench.config import config_dict_hash, config_hash
from bench.resolve import resolve
from bench.sweep import load_sweep

RESULTS = Path(__file__).resolve().parents[1] / "results"

# Sweeps whose shipped results folder (results/NAME) holds every one of their configurations.
MEASURED = ["dst-study", "label-scaling", "label-scaling-3m", "variants-65k", "aux-ablation"]


def ok_hashes(name: str) -> set[str]:
    """Hashes of the ``ok`` records of results/NAME, recomputed from each stored config as the
    sweep's skip of finished runs does."""
    lines = (RESULTS / name / "runs.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    return {config_dict_hash(r["config"]) for r in records if r.get("status") == "ok"}


@pytest.mark.parametrize("name", MEASURED)
def test_sweep_expands_to_the_recorded_configs(name):
    runs = load_sweep(name).expand([f"results_dir=results/{name}"])
    expanded = [config_hash(resolve(overrides)) for overrides in runs]
    assert len(set(expanded)) == len(runs), "two configurations of the sweep are the same experiment"
    assert set(expanded) == ok_hashes(name)
