"""Datasets by name: ``load_dataset(cfg.data)``. The built-in synthetic ones are registered here,
the others come from their cards (``bench.data.cards``): a new dataset is a new card."""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

from bench.config import DataConfig
from bench.data.cards import card_names, is_card_file, load_card, read_card, source_of
from bench.data.cache import load_cached, store
from bench.data.real import load_source
from bench.errors import ConfigError, DataFormatError, UnknownNameError
from bench.registry import Registry

DATASETS = Registry("dataset")
BUILT_IN = ("synthetic", "synthetic-text")  # made in memory: data.path means nothing to them


@DATASETS.register("synthetic")
def _synthetic(cfg: DataConfig):
    from bench.data.synthetic import make_synthetic

    return make_synthetic(
        num_labels=cfg.num_labels,
        num_train=cfg.num_train,
        num_test=cfg.num_test,
        num_features=cfg.num_features,
        avg_labels_per_point=cfg.avg_labels_per_point,
        zipf_exponent=cfg.zipf_exponent,
        seed=cfg.seed,
    )


@DATASETS.register("synthetic-text")
def _synthetic_text(cfg: DataConfig):
    """`synthetic` with raw texts for text encoders: each point's feature ids as words
    ("w123 w45 ..."), so a tokenizer over the words w0 … w{V-1} sees the same signal."""
    from bench.data.synthetic import render_texts

    dataset = _synthetic(cfg)
    dataset.name = "synthetic-text"
    dataset.train_text, dataset.test_text = render_texts(dataset.train_x), render_texts(dataset.test_x)
    return dataset


# One dataset per shipped card (bench/cards/NAME.yaml): its folder, format, files and split.
# The Extreme Classification Repository's benchmarks are not in ../shared/data: download them
# and point data.path at the folder (file names as in each card's `files`).
SOURCES = {name: source_of(load_card(name)) for name in card_names()}
for _name, _source in SOURCES.items():
    DATASETS.register(_name, partial(load_source, _name, _source))


def dataset_builder(name: str):
    """``build(cfg) -> XMCDataset`` of dataset ``name``: a registered dataset's, or for a card
    file (``path/to/NAME.yaml``) one that reads the files the card describes, its relative
    ``source.folder`` taken from the card file's folder. An unknown name is a ``ConfigError``
    with a "did you mean"; a card file that cannot be read, a ``DataFormatError``."""
    if is_card_file(name):
        path = Path(name)
        card = read_card(path)
        return partial(load_source, card["name"], source_of(card, base=path.parent))
    try:
        return DATASETS.get(name)
    except UnknownNameError as err:
        raise ConfigError(f"config key 'data.name': {err}; or give a card file, data=path/to/NAME.yaml "
                          "(`xmc-bench data card` writes one)") from None


def check_data(cfg: DataConfig) -> DataConfig:
    """``cfg`` with its dataset settled before anything runs: a ``data.path`` given without a
    dataset that reads files (``data.name`` still a built-in synthetic one, which would ignore
    the folder) names the card file in that folder (``DIR/NAME.yaml``), or is a
    ``ConfigError``; then the dataset name is checked (``check_dataset_name``)."""
    if cfg.path and cfg.name in BUILT_IN:
        cfg = dataclasses.replace(cfg, name=card_in_folder(cfg.path, cfg.name))
    check_dataset_name(cfg.name)
    return cfg


def card_in_folder(path: str, name: str) -> str:
    """The one card file (``*.yaml`` that reads as a card) in folder ``path``; a ``ConfigError``
    saying what to give instead when there is none or more than one."""
    folder = Path(path)
    fix = (f"data.path={path} is set but data.name={name!r} is built in and reads no files; "
           "give data=NAME (a shipped dataset: `xmc-bench list`) or data=path/to/NAME.yaml")
    if not folder.is_dir():
        raise ConfigError(f"{fix} (and {folder} is not a folder)")
    cards = []
    for candidate in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")]):
        try:
            read_card(candidate)
        except DataFormatError:
            continue  # another YAML file (a config, a sweep): not a card
        cards.append(candidate)
    if len(cards) == 1:
        return str(cards[0])
    if cards:
        raise ConfigError(f"{fix}: {folder} holds {len(cards)} cards ({', '.join(c.name for c in cards)}), "
                          "so which dataset is meant is unclear")
    shipped = [n for n, source in SOURCES.items() if source.folder == folder.name]
    raise ConfigError(f"{fix}: {folder} holds no card file (`xmc-bench data card` writes one)"
                      + (f"; did you mean data={shipped[0]} (its card's folder is {folder.name})?" if shipped else ""))


def check_dataset_name(name: str) -> None:
    """Raise the error ``load_dataset`` would for an unknown dataset name or a bad card file,
    without reading any data: configs call it before anything runs."""
    dataset_builder(name)


def load_dataset(cfg: DataConfig):
    """The dataset ``cfg.name`` (a registered name or a card file): from its prepared cache
    (``xmc-bench data prepare``) when one was built from the same data settings, else built
    from its source."""
    build = dataset_builder(cfg.name)
    dataset = load_cached(cfg)
    if dataset is None:
        dataset = build(cfg)
    dataset.validate()
    return dataset


def prepare(cfg: DataConfig, log=print):
    """Build dataset ``cfg.name``, check it against its card and cache it (``xmc-bench data
    prepare``); returns the cache folder."""
    return store(cfg, dataset_builder(cfg.name)(cfg).validate(), log)
