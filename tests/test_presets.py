"""The shipped presets (bench/presets/): every one resolves, lists, and runs end to end on the
tiny stand-in data of tests/data with a tiny random BERT and a few steps; its values reach the
record's config unless the user overrides them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.config import flatten
from bench.errors import UnknownNameError
from bench.methods import get_method
from bench.record import read_records
from bench.resolve import list_presets, load_preset, resolve

DATA = Path(__file__).parent / "data"
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "w"] + [f"##{i}" for i in range(10)]
PAPER = ["paper/amazon-3m", "paper/amazon-670k", "paper/lf-amazontitles-131k", "paper/lf-wikiseealso-320k",
         "paper/wiki-500k", "paper/wiki10-31k"]


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A 1-layer BERT config (hidden 24) + WordPiece vocabulary spelling the stand-ins' words."""
    from transformers import BertConfig, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    BertConfig(vocab_size=len(VOCAB), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=48, max_position_embeddings=64).save_pretrained(folder)
    return folder


def test_the_six_paper_presets_ship_and_resolve():
    assert list_presets("paper/*") == PAPER
    for name in PAPER:
        preset = load_preset(name)
        assert preset.description and preset.values["method"] == "spartex"
        cfg = resolve([], preset=name)
        assert cfg.model.encoder == "transformer" and cfg.train.precision == "fp16"
        assert cfg.dst.optimizer_state == "keep" and cfg.dst.end == 0.66 and cfg.train.patience == 25


def test_preset_values_from_the_reference_table():
    wiki10 = resolve([], preset="paper/wiki10-31k")
    assert (wiki10.model.intermediate, wiki10.model.intermediate_activation, wiki10.train.lr_intermediate) == (
        4096, "none", 0.01)
    assert (wiki10.model.fan_in, wiki10.dst.prune, wiki10.dst.threshold, wiki10.dst.threshold_floor) == (
        64, "threshold", 0.01, 1e-4)
    assert (wiki10.eval.propensity_a, wiki10.eval.propensity_b) == (0.5, 0.4)
    lf = resolve([], preset="paper/lf-amazontitles-131k")
    assert (lf.train.loss, lf.train.loss_reduction, lf.train.optimizer_classifier, lf.train.lr_classifier) == (
        "bce", "sum", "sgd", 0.08)
    assert (lf.train.optimizer_encoder, lf.aux.num_clusters, lf.aux.cutoff, lf.aux.cutoff_unit) == (
        "adam", 2048, 12, "epochs")
    assert lf.data.title_only and lf.data.label_text_points
    a3m = resolve([], preset="paper/amazon-3m")
    assert (a3m.train.batch_size, a3m.train.grad_accum, a3m.dst.prune, a3m.dst.fraction, a3m.dst.decay) == (
        128, 2, "fraction", 0.25, "constant")


def test_order_defaults_method_card_preset_user(tmp_path):
    """The preset beats the method and the card's recommendation; a --config file and key=value beat the preset."""
    assert resolve([], preset="paper/wiki-500k").train.lr_classifier == 0.05  # spartex says 0.01
    yaml_file = tmp_path / "mine.yaml"
    yaml_file.write_text("train:\n  lr_classifier: 0.2\n  epochs: 3\n")
    cfg = resolve(["train.epochs=2", "method=ffi-set"], yaml_file, preset="paper/wiki-500k")
    assert (cfg.train.lr_classifier, cfg.train.epochs, cfg.method) == (0.2, 2, "ffi-set")
    assert cfg.train.loss == "squared_hinge"  # still the preset's


def test_unknown_preset_suggests_the_close_name(capsys):
    with pytest.raises(UnknownNameError, match="did you mean 'paper/wiki10-31k'"):
        load_preset("paper/wiki10-31")
    assert main(["run", "--preset", "paper/wiki10-31"]) == 2
    assert "did you mean 'paper/wiki10-31k'" in capsys.readouterr().err


def test_list_shows_the_presets(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in PAPER:
        assert f"  {name} " in out and load_preset(name).description in out


def test_spartex_is_the_papers_common_part():
    spartex = get_method("spartex").overrides
    assert spartex["model.classifier"] == "ffi" and spartex["dst.regrow"] == "random"
    assert (spartex["train.loss"], spartex["train.loss_reduction"], spartex["model.bias_init"]) == (
        "squared_hinge", "mean", "zero")
    assert (spartex["dst.optimizer_state"], spartex["train.optimizer_classifier"], spartex["train.no_decay"]) == (
        "keep", "adamw", "encoder")
    assert "model.intermediate" not in spartex and "aux.scale" not in spartex  # per dataset: in the presets


# the tiny stand-ins: few points, 5 labels, hidden 24 → a small fan-in, intermediate and cluster file
TINY = {"model.fan_in": 8, "model.max_len": 16, "train.max_steps": 3, "train.epochs": 3, "train.batch_size": 4,
        "eval.batch_size": 4, "dst.interval": 1, "train.warmup_steps": 1}


@pytest.mark.parametrize("name", PAPER)
def test_every_preset_runs_end_to_end_on_stand_ins(name, tiny_bert, tmp_path, monkeypatch, stand_in_files):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    preset = load_preset(name)
    folder = DATA / ("lf" if preset.values["data.name"].startswith("lf-") else "text")
    tiny = dict(TINY)
    if preset.values["model.intermediate"]:
        tiny["model.intermediate"] = 16
    if preset.values["aux.scale"]:
        tiny.update({"aux.clusters_file": str(DATA / "text" / "label_group2.npy"), "aux.num_clusters": 2})
    overrides = [f"{k}={v}" for k, v in tiny.items()]
    torch.manual_seed(0)
    assert main(["run", "--preset", name, f"data.path={folder}", f"model.encoder_path={tiny_bert}",
                 "model.encoder_init=random", *overrides, f"results_dir={tmp_path / 'results'}",
                 "tracking.wandb=disabled", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["status"] == "ok", record.get("error")
    assert record["steps"] == 3 and 0 <= record["metrics"]["P@1"] <= 1
    config = flatten(record["config"])
    for key, value in preset.values.items():
        assert config[key] == (tiny[key] if key in tiny else value), key
