"""Dataset cards: one YAML file per dataset, the one description of it. The shipped cards are
package data (``bench/cards/NAME.yaml``, found through ``importlib.resources``, so an editable
and a wheel install find the same files); a card file elsewhere describes a user's dataset.

A card says where the files are and how to read them (``source.folder``, ``format``, ``files``,
``features``, ``labels_by``), how the test split is made (``split``: ``official`` when ``files``
has a ``test``, else ``seeded``), what the files hold (``statistics``; ``xmc-bench data prepare``
checks the counts) and the propensity parameters its PSP@k uses (``propensity: {A, B}``), beside
provenance and conventions for the reader. An optional ``recommended`` block holds training
settings for the dataset (config keys, e.g. ``train.epochs: 10``), applied after the method's
preset and before the user's (``bench.resolve.resolve``). A statistic a card is not sure of says
``"unverified"`` and is not checked. ``bench.data.catalog`` registers a dataset per shipped card.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from typing import Any

from bench.config import KEYS, RunConfig, _coerce, _get, flatten
from bench.data.formats import READERS
from bench.errors import BenchError, DataFormatError

REQUIRED = ("name", "title", "source", "format", "files", "features", "split", "statistics", "propensity", "conventions")
STATISTICS = ("num_train", "num_test", "num_features", "num_labels", "avg_labels_per_point", "avg_points_per_label")
COUNTS = ("num_train", "num_test", "num_features", "num_labels")  # what `data prepare` checks exactly
FEATURES = ("tfidf", "l2", "as-is")  # how bench.data.real weighs the features read from the files
LABELS_BY = ("name", "last")  # arff: the attributes the .xml names, or the last N (N from the .xml)
DEFAULT_PROPENSITY = {"A": 0.55, "B": 1.5}  # Jain et al. 2016's values for datasets other than Amazon/Wikipedia


@dataclass(frozen=True)
class Source:
    """How to read a dataset: the card's machine-readable part."""

    folder: str  # the card's source.folder: under the shared data root (bench.data.real), or data.path
    format: str  # a registered reader (bench.data.formats.READERS)
    train: str  # the training file (or prefix), or the only one when there is no official split
    test: str = ""  # the official test file (or prefix); "" means a seeded split of `train`
    xml: str = ""  # arff: the MULAN label list
    labels_by: str = "name"  # arff: `name` (attributes the .xml names) | `last` (the last N, N from the .xml)
    features: str = "tfidf"  # tfidf (counts / binary words) | l2 (dense numeric features) | as-is
    test_filter: str = ""  # optional filter file of (test point, label) pairs dropped from predictions
    texts: tuple[str, ...] = ()  # lf: raw text JSON lines (train, test, labels), each also looked for + ".gz"
    train_labels: str = ""  # text: the training label-name lines
    test_labels: str = ""  # text: the test label-name lines
    title_only: bool = False  # lf: a record's text is its title alone (data.title_only), not title + content
    counts: tuple[tuple[str, int], ...] = ()  # the card's checked counts (statistics), see check_read_counts


def cards_dir():
    """The shipped cards' folder (a ``Traversable``; a ``Path`` for an installed package)."""
    return resources.files("bench") / "cards"


def card_names() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in cards_dir().iterdir() if p.name.endswith(".yaml"))


def is_card_file(name: str) -> bool:
    """Whether a dataset name is a path to a card file rather than a shipped card's name."""
    return str(name).endswith((".yaml", ".yml"))


def dataset_name(name: str) -> str:
    """The name a dataset is recorded, cached and reported under: the card's name for a card
    file (its file name without ``.yaml``, as ``read_card`` requires), else ``name``."""
    return Path(name).name.rsplit(".", 1)[0] if is_card_file(name) else name


def load_card(name: str) -> dict | None:
    """The card of ``name`` as a dict (checked): a shipped card's, or the card file ``name``
    (``path/to/card.yaml``); ``None`` when no shipped card has that name."""
    if is_card_file(name):
        return read_card(Path(name))
    path = cards_dir() / f"{name}.yaml"
    if not path.is_file():
        return None
    return read_card(path)


def card_file(name: str) -> str | None:
    """Where the card of ``name`` is: the card file ``name`` itself, a shipped card's file, or
    ``None`` when there is none."""
    if is_card_file(name):
        return str(name)
    path = cards_dir() / f"{name}.yaml"
    return str(path) if path.is_file() else None


def card_propensity(name: str) -> dict:
    """``{A, B, card}``: the propensity parameters of the card of ``name`` and its file, or
    Jain et al.'s defaults and ``card: None`` for a dataset without a card (synthetic)."""
    card = load_card(name)
    return {**(card["propensity"] if card else DEFAULT_PROPENSITY), "card": card_file(name) if card else None}


def read_card(path) -> dict:
    """The card in file ``path`` as a dict, checked; a ``DataFormatError`` names what is wrong."""
    import yaml

    path = Path(path) if isinstance(path, str) else path  # else a Path or an importlib.resources Traversable
    try:
        card = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataFormatError(path, None, "no such card file") from None
    except UnicodeDecodeError as err:
        raise DataFormatError(path, None, f"not UTF-8 ({err.reason}): expected a YAML card") from None
    except yaml.YAMLError as err:
        line = err.problem_mark.line + 1 if getattr(err, "problem_mark", None) else None
        raise DataFormatError(path, line, f"not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(card, dict):
        raise DataFormatError(path, None, "expected a mapping of card fields")
    missing = [key for key in REQUIRED if key not in card]
    if missing:
        raise DataFormatError(path, None, f"missing card fields {missing}: expected {', '.join(REQUIRED)}")
    stem = path.name.rsplit(".", 1)[0]
    if card["name"] != stem:
        raise DataFormatError(path, None, f"name {card['name']!r} differs from the file name {stem!r}")
    stats = card["statistics"]
    for key in STATISTICS:
        value = stats.get(key) if isinstance(stats, dict) else None
        if not (value == "unverified" or (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0)):
            raise DataFormatError(path, None, f"statistics.{key} is {value!r}: expected a non-negative number or 'unverified'")
    prop = card["propensity"]
    if not (isinstance(prop, dict) and all(isinstance(prop.get(k), (int, float)) for k in ("A", "B"))):
        raise DataFormatError(path, None, f"propensity is {prop!r}: expected {{A: number, B: number}}")
    _check_source(path, card)
    _check_recommended(path, card)
    return card


def _check_recommended(path, card: dict) -> None:
    """The optional ``recommended`` block: config keys (dotted, or nested as in a YAML config)
    with values of their type, applied after the method's preset and before the user's."""
    from bench.errors import ConfigError

    block = card.get("recommended")
    if block is None:
        return
    if not isinstance(block, dict):
        raise DataFormatError(path, None, f"recommended is {block!r}: expected a mapping of config keys to values")
    for name, value in flatten(block).items():
        if name not in KEYS or name in NOT_RECOMMENDABLE:
            why = "a user's choice, not a card's" if name in NOT_RECOMMENDABLE else "unknown config key"
            raise DataFormatError(path, None, f"recommended.{name}: {why}; expected keys of `xmc-bench run "
                                  "--help-config` other than " + ", ".join(NOT_RECOMMENDABLE))
        try:
            value = _coerce(KEYS[name], value)
            KEYS[name].knob.check(name, value)
        except ConfigError as err:
            raise DataFormatError(path, None, f"recommended.{name}: {err}") from None


def _check_source(path, card: dict) -> None:
    """The fields ``source_of`` reads: folder, a registered format, the files it needs, the
    feature weighting and a split that agrees with the files."""
    if not (isinstance(card["source"], dict) and isinstance(card["source"].get("folder"), str)):
        raise DataFormatError(path, None, "source.folder is missing: expected the folder that holds the files")
    fmt = card["format"]
    if fmt not in READERS:
        raise DataFormatError(path, None, f"format is {fmt!r}: expected one of {', '.join(READERS.names())}")
    reader, files = READERS.get(fmt), card["files"]
    if not isinstance(files, dict):
        raise DataFormatError(path, None, f"files is {files!r}: expected a mapping of {', '.join(reader.files)}")
    allowed = (*reader.files, "test_filter")
    unknown = [key for key in files if key not in allowed]
    absent = [key for key in reader.required if not files.get(key)]
    if unknown or absent:
        raise DataFormatError(path, None, f"files of format {fmt} {'take no ' + ', '.join(unknown) if unknown else ''}"
                              f"{'; ' if unknown and absent else ''}{'need ' + ', '.join(absent) if absent else ''}: "
                              f"expected {', '.join(reader.required)} (required) of {', '.join(allowed)}")
    for key, value in files.items():
        if not (isinstance(value, str) and value if key != "texts" else
                isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) and v for v in value)):
            raise DataFormatError(path, None, f"files.{key} is {value!r}: expected "
                                  + ("[train, test, labels] file names" if key == "texts" else "a file name"))
    if card["features"] not in FEATURES:
        raise DataFormatError(path, None, f"features is {card['features']!r}: expected one of {', '.join(FEATURES)}")
    if card.get("labels_by", "name") not in LABELS_BY or ("labels_by" in card and fmt != "arff"):
        raise DataFormatError(path, None, f"labels_by is {card['labels_by']!r}: expected name or last, format arff only")
    split = "official" if files.get("test") else "seeded"
    if not str(card["split"]).startswith(split):
        raise DataFormatError(path, None, f"split {str(card['split'])[:40]!r}... should start with {split!r}: "
                              f"files {'has' if files.get('test') else 'has no'} test file")


def source_of(card: dict, base=None) -> Source:
    """The ``Source`` of a checked card; a relative ``source.folder`` is taken relative to
    ``base`` when given (a card file's folder), else to the shared data root."""
    files = card["files"]
    # absolute: a relative card path must not be read as a folder under the shared data root
    folder = str(Path(base).absolute() / card["source"]["folder"]) if base is not None else card["source"]["folder"]
    return Source(
        folder=folder, format=card["format"], train=files["train"], test=files.get("test", ""),
        xml=files.get("xml", ""), labels_by=card.get("labels_by", "name"), features=card["features"],
        test_filter=files.get("test_filter", ""), texts=tuple(files.get("texts", ())),
        train_labels=files.get("train_labels", ""), test_labels=files.get("test_labels", ""),
        counts=tuple((key, value) for key, value in card["statistics"].items()
                     if key in (*COUNTS, "num_points") and isinstance(value, int) and not isinstance(value, bool)),
    )


def check_read_counts(name: str, source: Source, folder: Path, parts: list) -> None:
    """Raise a ``DataFormatError`` naming the file when the files just read do not hold the
    counts the card of ``name`` states (a file truncated at a line boundary reads cleanly
    otherwise). ``parts`` are the reader's (features, labels) per file, before any split:
    with an official split the train and test files are checked against ``num_train`` and
    ``num_test``; a single file against ``num_points`` (or ``num_train + num_test``); every
    file against ``num_features`` and ``num_labels``. Counts the card leaves ``unverified``
    are not checked."""
    stated = dict(source.counts)
    if not stated:
        return
    card = f"card {name}.yaml"
    files = [(source.train, "num_train" if source.test else "num_points")]
    if source.test:
        files.append((source.test, "num_test"))
    if not source.test and "num_points" not in stated and {"num_train", "num_test"} <= set(stated):
        stated["num_points"] = stated["num_train"] + stated["num_test"]
    for (file, rows_key), (x, y) in zip(files, parts):
        found = {rows_key: x.num_rows, "num_features": x.num_cols, "num_labels": y.num_cols}
        wrong = [f"{key} {value} (the {card} says statistics.{key}: {stated[key]})"
                 for key, value in found.items() if key in stated and stated[key] != value]
        if wrong:
            path = Path(folder) / file  # a file, or the prefix of a split's files (xc-split, lf)
            raise DataFormatError(path if path.exists() else f"{path}_*", None, "holds " + ", ".join(wrong)
                                  + "; a truncated or different file? (the counts are as the files are read, "
                                  "before any split)")


def check_against_card(stats: dict, card: dict) -> None:
    """Raise ``BenchError`` listing every count of ``stats`` that differs from the card's."""
    wrong = [
        f"{key}: card says {card['statistics'][key]}, files give {stats[key]}"
        for key in COUNTS
        if isinstance(card["statistics"].get(key), int) and card["statistics"][key] != stats[key]
    ]
    if wrong:
        raise BenchError(f"dataset {card['name']!r} does not match its card {card['name']}.yaml: " + "; ".join(wrong))


# Keys a card's `recommended` block may not set: which dataset and method run is the user's choice.
NOT_RECOMMENDABLE = ("method", "data.name", "data.path", "data.cache_dir")


def card_recommended(dataset: str) -> dict[str, Any]:
    """The training settings the card of ``dataset`` recommends (its ``recommended`` block,
    dotted keys, values typed), ``{}`` for a dataset without a card or without the block."""
    card = load_card(dataset)  # a checked card: an unknown key in `recommended` already failed here
    values = flatten((card or {}).get("recommended") or {})
    return {name: _coerce(KEYS[name], value) for name, value in values.items()}


def card_overrides(cfg: RunConfig) -> dict[str, Any]:
    """The card's recommended settings this config runs with: those of ``card_recommended``
    whose value the resolved config still has (a user's own value for a key replaces it)."""
    return {name: value for name, value in card_recommended(cfg.data.name).items() if _get(cfg, name) == value}
