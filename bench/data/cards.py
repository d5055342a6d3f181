"""Dataset cards: ``datasets/NAME.yaml`` beside the package, one per dataset (source, format,
files, split, published statistics, propensity A/B, conventions).

``xmc-bench data prepare`` checks a dataset against its card's counts, and the propensity
parameters of a card are the ones its PSP@k uses. A statistic a card is not sure of says
``"unverified"`` and is not checked.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import BenchError, DataFormatError

CARDS_DIR = Path(__file__).resolve().parents[2] / "datasets"
REQUIRED = ("name", "title", "registered", "source", "format", "files", "split", "statistics", "propensity", "conventions")
STATISTICS = ("num_train", "num_test", "num_features", "num_labels", "avg_labels_per_point", "avg_points_per_label")
COUNTS = ("num_train", "num_test", "num_features", "num_labels")  # what `data prepare` checks exactly


def card_names() -> list[str]:
    return sorted(p.stem for p in CARDS_DIR.glob("*.yaml"))


def load_card(name: str) -> dict | None:
    """The card of ``name`` as a dict (checked), or ``None`` when there is no card."""
    path = CARDS_DIR / f"{name}.yaml"
    if not path.exists():
        return None
    return read_card(path)


def read_card(path) -> dict:
    import yaml

    path = Path(path)
    try:
        card = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        line = err.problem_mark.line + 1 if getattr(err, "problem_mark", None) else None
        raise DataFormatError(path, line, f"not valid YAML: {getattr(err, 'problem', err)}") from None
    if not isinstance(card, dict):
        raise DataFormatError(path, None, "expected a mapping of card fields")
    missing = [key for key in REQUIRED if key not in card]
    if missing:
        raise DataFormatError(path, None, f"missing card fields {missing}: expected {', '.join(REQUIRED)}")
    if card["name"] != path.stem:
        raise DataFormatError(path, None, f"name {card['name']!r} differs from the file name {path.stem!r}")
    stats = card["statistics"]
    for key in STATISTICS:
        value = stats.get(key) if isinstance(stats, dict) else None
        if not (value == "unverified" or (isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0)):
            raise DataFormatError(path, None, f"statistics.{key} is {value!r}: expected a non-negative number or 'unverified'")
    prop = card["propensity"]
    if not (isinstance(prop, dict) and all(isinstance(prop.get(k), (int, float)) for k in ("A", "B"))):
        raise DataFormatError(path, None, f"propensity is {prop!r}: expected {{A: number, B: number}}")
    return card


def check_against_card(stats: dict, card: dict) -> None:
    """Raise ``BenchError`` listing every count of ``stats`` that differs from the card's."""
    wrong = [
        f"{key}: card says {card['statistics'][key]}, files give {stats[key]}"
        for key in COUNTS
        if isinstance(card["statistics"].get(key), int) and card["statistics"][key] != stats[key]
    ]
    if wrong:
        raise BenchError(f"dataset {card['name']!r} does not match datasets/{card['name']}.yaml: " + "; ".join(wrong))
