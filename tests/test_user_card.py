"""A user's own dataset in one step: `xmc-bench data card` writes a card from the files, and
`data=path/to/NAME.yaml` runs, prepares, caches and records it under its own name. Unknown
dataset names are config errors before anything runs."""

import json

import numpy as np
import pytest

from bench.cli import main
from bench.resolve import resolve
from bench.data.formats import write_arff, write_bow, write_mulan_xml
from bench.errors import ConfigError
from bench.sparse import CSR

RUN = ["model.embed_dim=16", "train.epochs=1", "train.batch_size=16", "eval.batch_size=16", "tracking.wandb=disabled"]


def _random(n, width, per_row, seed):
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(width, size=rng.integers(1, per_row + 1), replace=False)) for _ in range(n)]


@pytest.fixture
def enron_files(tmp_path):
    """A small MULAN dataset, as a user would have it: ARFF + .xml, no split."""
    folder = tmp_path / "enron"
    folder.mkdir()
    x = CSR.from_rows(_random(50, 30, 6, 0), 30, values=[np.ones(6)[: len(r)] for r in _random(50, 30, 6, 0)])
    y = CSR.from_rows(_random(50, 7, 3, 1), 7)
    labels = [f"L{i}" for i in range(7)]
    write_mulan_xml(folder / "enron.xml", labels)
    write_arff(folder / "enron.arff", x, y, label_names=labels)
    return folder


def test_card_from_files_then_run_prepare_and_info(enron_files, tmp_path, capsys):
    assert main(["data", "card", "--format", "arff", "--train", str(enron_files / "enron.arff"),
                 "--xml", str(enron_files / "enron.xml"), "--name", "enron", "--A", "0.6", "--B", "2.6"]) == 0
    card_path = enron_files / "enron.yaml"
    assert f"card written to {card_path}" in capsys.readouterr().out
    from bench.data.cards import load_card

    card = load_card(str(card_path))
    assert card["format"] == "arff" and card["files"] == {"train": "enron.arff", "xml": "enron.xml"}
    assert card["source"]["folder"] == "." and card["split"].startswith("seeded")
    counts = {k: card["statistics"][k] for k in ("num_points", "num_train", "num_test", "num_features", "num_labels")}
    assert counts == {"num_points": 50, "num_train": 40, "num_test": 10, "num_features": 30, "num_labels": 7}
    assert card["propensity"] == {"A": 0.6, "B": 2.6}

    # a run from anywhere: the record names the dataset and takes the card's propensities
    from bench.experiment import run_experiment

    cfg = resolve(["method=dense", f"data={card_path}", f"results_dir={tmp_path / 'results'}",
                   f"data.cache_dir={tmp_path / 'cache'}", *RUN])
    record = run_experiment(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["dataset"]["name"] == "enron" and record["dataset"]["num_train"] == 40
    assert record["propensity"] == {"A": 0.6, "B": 2.6, "source": "card"}

    # prepare caches it under its own name; info reads the cache back
    assert main(["data", "prepare", str(card_path), "--cache-dir", str(tmp_path / "cache")]) == 0
    assert (tmp_path / "cache" / "enron" / "meta.json").is_file()
    capsys.readouterr()
    assert main(["data", "info", str(card_path), "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["from"].startswith("cache") and info["num_labels"] == 7
    assert info["propensity"] == {"A": 0.6, "B": 2.6, "card": str(card_path)}


def test_card_elsewhere_points_at_the_files(tmp_path):
    from bench.data.catalog import load_dataset
    from bench.data.make_card import make_card

    folder = tmp_path / "data"
    folder.mkdir()
    rows = _random(30, 12, 4, 2)
    write_bow(folder / "train.txt", CSR.from_rows(rows, 12, values=[np.full(len(r), 2.0) for r in rows]),
              CSR.from_rows(_random(30, 5, 2, 3), 5))
    write_bow(folder / "test.txt", CSR.from_rows(rows[:9], 12, values=[np.full(len(r), 2.0) for r in rows[:9]]),
              CSR.from_rows(_random(9, 5, 2, 4), 5))
    out = make_card("mine", "xc-bow", {"train": folder / "train.txt", "test": folder / "test.txt"},
                    out_dir=tmp_path / "cards")
    assert out == tmp_path / "cards" / "mine.yaml"
    from bench.data.cards import load_card

    card = load_card(str(out))
    assert card["source"]["folder"] == "../data" and card["split"].startswith("official")
    assert (card["statistics"]["num_train"], card["statistics"]["num_test"]) == (30, 9)
    d = load_dataset(resolve([f"data={out}"]).data)
    assert d.name == "mine" and (d.num_train, d.num_test, d.num_labels) == (30, 9, 5)


def test_card_refuses_a_shipped_name_and_missing_files(enron_files, capsys):
    args = ["data", "card", "--format", "arff", "--train", str(enron_files / "enron.arff")]
    assert main([*args, "--xml", str(enron_files / "enron.xml"), "--name", "bibtex"]) == 2
    assert "is a shipped dataset" in capsys.readouterr().err
    assert main([*args, "--name", "enron"]) == 2
    assert "format arff needs --xml" in capsys.readouterr().err


def test_unknown_dataset_is_a_config_error_before_anything_runs(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown dataset 'bibtx' — did you mean 'bibtex'"):
        resolve(["method=dense", "data=bibtx"])
    with pytest.raises(Exception, match="no such card file"):
        resolve(["method=dense", f"data={tmp_path / 'nope.yaml'}"])
    assert main(["run", "method=dense", "data=enron", f"results_dir={tmp_path / 'results'}"]) == 2
    assert "unknown dataset 'enron'" in capsys.readouterr().err
    assert not (tmp_path / "results").exists()  # no run, so no record
