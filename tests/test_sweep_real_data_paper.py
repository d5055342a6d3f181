"""The shipped sweep real-data-paper (reports/real-data.md) expands to exactly the configurations
recorded in results/real-data-paper, so `xmc-bench sweep real-data-paper` skips them all as
finished; and it spells out the paper's loss and optimisers instead of relying on a preset."""

import json
from pathlib import Path

from bench.config import config_dict_hash, config_hash
from bench.resolve import resolve
from bench.sweep import load_sweep

RECORDS = Path(__file__).resolve().parents[1] / "results" / "real-data-paper" / "runs.jsonl"


def test_real_data_paper_expands_to_the_recorded_configs():
    runs = load_sweep("real-data-paper").expand([])
    expanded = [config_hash(resolve(overrides)) for overrides in runs]
    assert len(set(expanded)) == len(runs), "two configurations of the sweep are the same experiment"
    records = [json.loads(line) for line in RECORDS.read_text().splitlines() if line.strip()]
    assert set(expanded) == {config_dict_hash(r["config"]) for r in records if r.get("status") == "ok"}


def test_real_data_paper_trains_with_squared_hinge_and_adamw():
    for overrides in load_sweep("real-data-paper").expand([]):
        config = resolve(overrides)
        assert config.train.loss == "squared_hinge" and config.train.loss_reduction == "mean"
        assert config.train.optimizer_classifier == "adamw" and config.model.bias_init == "zero"
