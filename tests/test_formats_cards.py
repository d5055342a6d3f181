"""Every dataset card parses and has the required fields; registered cards match the catalog."""

import pytest

from bench.data.cards import STATISTICS, card_names, check_against_card, load_card, read_card
from bench.data.catalog import DATASETS, SOURCES
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
    assert name in DATASETS  # every card is a dataset


def test_the_benchmark_cards_exist():
    assert XC_BENCHMARKS <= set(card_names())
    assert set(SOURCES) == set(card_names())  # the catalog's file datasets are the cards


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


def test_every_card_uses_a_registered_format():
    from bench.data.formats import READERS

    formats = {load_card(name)["format"] for name in card_names()}
    assert formats == {"arff", "xc-bow", "lf", "text"} and formats <= set(READERS.names())
    assert set(READERS.names()) == {"arff", "xc-bow", "xc-split", "lf", "text"}  # the one vocabulary


@pytest.mark.parametrize("change, message", [
    ({"format": "mulan-arff"}, "format is 'mulan-arff': expected one of arff, lf, text, xc-bow, xc-split"),
    ({"files": ["bibtex-train.arff"]}, "files is .*: expected a mapping"),
    ({"files": {"train": "bibtex-train.arff"}}, "files of format arff need xml"),
    ({"files": {"train": "a", "xml": "b", "texts": ["x", "y", "z"]}}, "files of format arff take no texts"),
    ({"files": {"train": 3, "xml": "b"}}, "files.train is 3: expected a file name"),
    ({"features": "idf"}, "features is 'idf'"),
    ({"labels_by": "first"}, "labels_by is 'first'"),
    ({"split": "seeded: 20 %"}, "should start with 'official'"),
    ({"source": {"url": "x"}}, "source.folder is missing"),
])
def test_a_card_that_cannot_be_read_names_the_field(tmp_path, change, message):
    import yaml

    (tmp_path / "bibtex.yaml").write_text(yaml.safe_dump(load_card("bibtex") | change))
    with pytest.raises(DataFormatError, match=message):
        read_card(tmp_path / "bibtex.yaml")


def test_cards_and_baselines_are_package_data():
    from pathlib import Path

    import bench
    from bench.data.cards import cards_dir
    from bench.report import BASELINES_CSV

    package = Path(bench.__file__).parent
    assert cards_dir() == package / "cards" and BASELINES_CSV == package / "baselines" / "published.csv"
    assert BASELINES_CSV.is_file() and not (package / "cards" / "__init__.py").exists()  # no `datasets`-like package
