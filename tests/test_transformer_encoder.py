"""The transformer encoder on a tiny random BERT written to tmp_path (config + WordPiece
vocabulary): loads offline, pools, and trains end to end on synthetic texts."""

from __future__ import annotations

import pytest
import torch

from bench.cli import main
from bench.resolve import resolve
from bench.errors import ConfigError
from bench.record import read_records

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "w"] + [f"##{i}" for i in range(10)]


@pytest.fixture
def tiny_bert(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path / "tiny-bert"
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(VOCAB), hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=48, max_position_embeddings=64)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(folder)
    return folder


def _encoder_overrides(folder, tmp_path, *extra):
    return ["method=ffi-set", "data=synthetic-text", "data.num_labels=32", "data.num_train=40",
            "data.num_test=16", "data.num_features=300", "data.avg_labels_per_point=2",
            "model.encoder=transformer", f"model.encoder_path={folder}", "model.max_len=32", "model.fan_in=8",
            "train.max_steps=2", "train.batch_size=8", "eval.batch_size=8", "train.lr_encoder=1e-4",
            f"results_dir={tmp_path / 'results'}", "tracking.wandb=disabled", f"data.cache_dir={tmp_path / 'cache'}",
            *extra]


def test_synthetic_text_renders_feature_ids_as_words():
    from bench.data.catalog import load_dataset

    data = load_dataset(resolve(["data=synthetic-text", "data.num_labels=16", "data.num_train=20",
                                 "data.num_test=5", "data.num_features=100"]).data)
    assert len(data.train_text) == 20 and len(data.test_text) == 5
    assert data.train_text[3].split() == [f"w{j}" for j in data.train_x.row(3)]


@pytest.mark.parametrize("pooling, init", [("mean", "pretrained"), ("cls", "random")])
def test_transformer_encoder_trains_end_to_end(tiny_bert, tmp_path, pooling, init, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    overrides = _encoder_overrides(tiny_bert, tmp_path, f"model.pooling={pooling}", f"model.encoder_init={init}",
                                   "aux.scale=0.4", "aux.num_clusters=4", "model.intermediate=16")
    assert main(["run", *overrides]) == 0
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["status"] == "ok", record.get("error")
    assert record["steps"] == 2 and 0 <= record["metrics"]["P@1"] <= 1
    assert record["memory"]["encoder"]["parameters"] > 0
    assert record["memory"]["intermediate"]["parameters"] == (24 * 16 + 16) * 4  # hidden 24 → 16
    assert all(g > 0 for g in record["gradient_flow"]["encoder_grad_norm"] or [1.0])


def test_pooling_ignores_padding(tiny_bert):
    from bench.models.transformer import TransformerEncoder

    class B:
        texts = ("w1 w2", "w1 w2 w3 w4 w5 w6")

    encoder = TransformerEncoder(str(tiny_bert), pooling="mean").eval()
    both = encoder(B())
    alone = encoder(type("One", (), {"texts": ("w1 w2",)})())
    torch.testing.assert_close(both[0], alone[0], atol=1e-5, rtol=1e-5)
    assert encoder.out_features == 24


def test_missing_local_model_is_a_config_error_naming_the_path(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(ConfigError, match="no-such-model"):
        from bench.models.transformer import TransformerEncoder

        TransformerEncoder(str(missing))
    assert main(["run", *_encoder_overrides(missing, tmp_path)]) == 1
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["status"] == "failed" and "no-such-model" in record["reason"]


def test_transformer_on_features_only_data_is_a_clear_error(tiny_bert, tmp_path):
    overrides = [o if o != "data=synthetic-text" else "data=synthetic" for o in _encoder_overrides(tiny_bert, tmp_path)]
    assert main(["run", *overrides]) == 1
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert "raw texts" in record["reason"]
