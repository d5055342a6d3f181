"""Every dataset card parses and has the required fields; registered cards match the catalog."""

import pytest

from bench.data.cards import STATISTICS, card_names, check_against_card, load_card, read_card
from bench.data.catalog import DATASETS, SHARED, XC
from bench.errors import BenchError, DataFormatError

XC_BENCHMARKS = {
    "eurlex-4k", "wiki10-31k", "amazoncat-13k", "wiki-500k", "amazon-670k", "amazon-3m",
    "lf-amazontitles-131k", "lf-wikiseealso-320k", "lf-amazontitles-1.3m",
}


@pytest.mark.parametrize("name", card_names())
def test_card_parses_with_required_fields(name):
    card = load_card(name)
    assert card["title"] and card["source"] and card["files"]
    assert set(STATISTICS) <= set(card["statistics"])
    assert 0 < card["propensity"]["A"] < 1 and card["propensity"]["B"] >= 0
    # a card says it is registered exactly when `data=NAME` loads it
    assert card["registered"] == (name in DATASETS), name


def test_the_benchmark_cards_exist():
    assert XC_BENCHMARKS <= set(card_names())
    assert set(SHARED) | set(XC) <= set(card_names())  # every dataset read from files has a card
    assert set(XC) == XC_BENCHMARKS


def test_bad_cards_are_clear(tmp_path):
    (tmp_path / "x.yaml").write_text("name: x\ntitle: [unclosed\n")
    with pytest.raises(DataFormatError, match=r"x.yaml:\d+: not valid YAML"):
        read_card(tmp_path / "x.yaml")
    (tmp_path / "y.yaml").write_text("name: y\ntitle: Y\n")
    with pytest.raises(DataFormatError, match="missing card fields"):
        read_card(tmp_path / "y.yaml")
    good = (load_card("bibtex") | {"name": "z"})
    good["statistics"] = dict(good["statistics"], num_labels="about 160")
    import yaml

    (tmp_path / "z.yaml").write_text(yaml.safe_dump(good))
    with pytest.raises(DataFormatError, match="statistics.num_labels"):
        read_card(tmp_path / "z.yaml")


def test_check_against_card_names_the_mismatch():
    card = load_card("bibtex")
    stats = {k: card["statistics"][k] for k in ("num_train", "num_test", "num_features", "num_labels")}
    check_against_card(stats, card)
    with pytest.raises(BenchError, match="num_labels: card says 159, files give 158"):
        check_against_card(stats | {"num_labels": 158}, card)
    wiki = load_card("lf-wikiseealso-320k")  # "unverified" counts are not checked
    check_against_card({"num_train": 693082, "num_test": 177515, "num_features": 1, "num_labels": 312330}, wiki)
