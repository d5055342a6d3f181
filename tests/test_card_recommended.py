"""A card's `recommended:` training settings: applied after the method's preset and before the
user's YAML and key=value, listed in the record (`card_overrides`), checked when the card is
read (an unknown key names the card)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.data.cards import card_overrides, card_recommended
from bench.resolve import resolve
from bench.data.cards import card_names, load_card
from bench.errors import DataFormatError
from bench.record import new_record

TEXT_CARD = Path(__file__).parent / "data" / "text" / "tiny-text.yaml"
SMALL_REAL = ("bibtex", "delicious", "corel5k", "mediamill-small", "stackex-chemistry", "stackex-cs",
              "stackex-cooking")


def card_with(tmp_path, recommended: str, name: str = "mine") -> str:
    """The stand-in text card under another name, with ``recommended`` as its block."""
    text = TEXT_CARD.read_text().replace("name: tiny-text", f"name: {name}").replace("folder: .", f"folder: {TEXT_CARD.parent}")
    lines = [line for line in text.splitlines() if not line.startswith("recommended:")]
    path = tmp_path / f"{name}.yaml"
    path.write_text("\n".join(lines) + "\n" + recommended + "\n")
    return str(path)


def test_order_preset_then_card_then_user(tmp_path):
    card = card_with(tmp_path, "recommended:\n  aux.cutoff: 0.25\n  train:\n    epochs: 7")
    cfg = resolve(["method=ffi-set-aux", f"data={card}"])
    assert cfg.aux.cutoff == 0.25 and cfg.aux.scale == 0.4 and cfg.train.epochs == 7  # card beats the preset
    assert card_overrides(cfg) == {"aux.cutoff": 0.25, "train.epochs": 7}
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("train:\n  epochs: 2\n")
    cfg = resolve(["method=ffi-set-aux", f"data={card}", "aux.cutoff=0.3"], yaml_file)
    assert (cfg.aux.cutoff, cfg.train.epochs) == (0.3, 2)  # the user's YAML and key=value win
    assert card_overrides(cfg) == {}


def test_record_lists_the_card_overrides(tmp_path):
    card = card_with(tmp_path, "recommended: {train.epochs: 7, train.lr_classifier: 0.25}")
    record = new_record(resolve([f"data={card}", "train.epochs=4"]), "run-1")
    assert record["card_overrides"] == {"train.lr_classifier": 0.25}
    assert record["config"]["train"]["epochs"] == 4
    assert new_record(resolve(["data=synthetic"]), "run-2")["card_overrides"] == {}


def test_dense_on_bibtex_takes_the_card_epochs():
    cfg = resolve(["method=dense", "data=bibtex"])
    assert cfg.train.epochs == 10 and card_overrides(cfg) == {"train.epochs": 10}
    assert resolve(["method=dense", "data=bibtex", "train.epochs=3"]).train.epochs == 3


def test_shipped_small_real_cards_recommend_ten_epochs():
    for name in SMALL_REAL:
        assert card_recommended(name) == {"train.epochs": 10}, name
    for name in card_names():  # every shipped card's block is valid
        load_card(name)


@pytest.mark.parametrize("block, message", [
    ("recommended: {train.epoch: 10}", "recommended.train.epoch: unknown config key"),
    ("recommended: {data.name: bibtex}", "recommended.data.name: a user's choice"),
    ("recommended: {method: dense}", "recommended.method: a user's choice"),
    ("recommended: {train.epochs: ten}", "recommended.train.epochs: config key 'train.epochs' expects an int"),
    ("recommended: {train.epochs: -1}", r"recommended.train.epochs: config key 'train.epochs' must be >= 0"),
    ("recommended: {model.encoder: lstm}", "recommended.model.encoder: config key 'model.encoder' must be one of"),
    ("recommended: [train.epochs]", "recommended is .*: expected a mapping"),
])
def test_bad_recommended_block_names_the_card(tmp_path, block, message):
    card = card_with(tmp_path, block)
    with pytest.raises(DataFormatError, match=message) as info:
        resolve([f"data={card}"])
    assert info.value.path == card
