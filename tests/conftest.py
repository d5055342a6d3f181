import os

import pytest

# Tests never talk to a W&B server; offline runs are written under each test's tmp_path.
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


TINY = [
    "data.num_labels=64", "data.num_train=400", "data.num_test=120", "data.num_features=600",
    "data.avg_labels_per_point=3", "model.embed_dim=32", "model.fan_in=8", "train.epochs=1",
    "train.batch_size=64", "eval.batch_size=50", "model.label_chunk=24",
]


@pytest.fixture
def tiny_overrides(tmp_path):
    """A run that takes about a second: tiny synthetic data, tiny model, W&B off; anything
    cached (label clusters) goes under tmp_path."""
    return [*TINY, f"results_dir={tmp_path / 'results'}", "tracking.wandb=disabled",
            f"data.cache_dir={tmp_path / 'cache'}"]


@pytest.fixture
def stand_in_files(monkeypatch):
    """Tiny stand-in files read under a shipped card's name: they cannot hold the card's counts,
    so the check of every read against the card (``bench.data.real.check_read_counts``) is off."""
    monkeypatch.setattr("bench.data.real.check_read_counts", lambda *args: None)
