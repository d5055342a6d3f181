"""The readers on the real files in ../shared/data (header counts, official splits) and the
registered datasets built from them. Skipped where that folder is absent."""

import os
from pathlib import Path

import numpy as np
import pytest

from bench.config import DataConfig
from bench.data.cards import check_against_card, load_card
from bench.data.catalog import SOURCES, load_dataset
from bench.data.formats import read_arff, read_bow, read_mulan_xml
from bench.data.real import seeded_split
from bench.errors import BenchError

SHARED_DATA = Path(os.environ.get("XMC_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
needs_data = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data not found at {SHARED_DATA} (set XMC_SHARED_DATA)"
)

# (dataset, num_train, num_test, num_features, num_labels): the counts SOURCE.md verified
EXPECTED = [
    ("bibtex", 4880, 2515, 1836, 159),
    ("delicious", 12920, 3185, 500, 983),
    ("corel5k", 4500, 500, 499, 374),
    ("mediamill-small", 2000, 500, 120, 101),
    ("stackex-cooking", 8393, 2098, 577, 400),
    ("stackex-cs", 7416, 1854, 635, 274),
    ("stackex-chemistry", 5569, 1392, 540, 175),
]
XC = {n: s for n, s in SOURCES.items() if n not in {e[0] for e in EXPECTED}}  # the XC benchmarks: not in shared/data


@needs_data
def test_arff_headers_match_the_xml():
    labels = read_mulan_xml(SHARED_DATA / "Corel5k" / "Corel5k.xml")
    data = read_arff(SHARED_DATA / "Corel5k" / "Corel5k-test-sparse.arff", labels)
    assert data.features.shape == (500, 499) and data.labels.shape == (500, 374)
    assert data.label_names == labels and data.feature_names[0] == "Cluster1"
    assert (data.labels.row_lengths() > 0).all()  # SOURCE.md: every row has a label
    assert data.labels.nnz / 500 == pytest.approx(3.53, abs=0.005)
    # Mediamill: dense numeric rows
    labels = read_mulan_xml(SHARED_DATA / "Mediamill_small" / "mediamill_small.xml")
    data = read_arff(SHARED_DATA / "Mediamill_small" / "mediamill_small.arff", labels)
    assert data.features.shape == (2500, 120) and data.labels.shape == (2500, 101)


@needs_data
def test_delicious_xml_names_differ_from_the_split_files():
    # the lehneres .xml renames 9 label attributes of Mulan's split files: by name fails clearly,
    # the last-N convention (what the catalog uses) reads the 983 labels
    labels = read_mulan_xml(SHARED_DATA / "Delicious" / "delicious.xml")
    path = SHARED_DATA / "Delicious" / "delicious-test.arff"
    with pytest.raises(BenchError, match="9 label"):
        read_arff(path, labels)
    data = read_arff(path, len(labels))
    assert data.labels.shape == (3185, 983)
    assert int((data.labels.row_lengths() == 0).sum()) == 4  # SOURCE.md: 4 test rows without a label


@needs_data
def test_bow_header_counts():
    x, y = read_bow(SHARED_DATA / "Stackex_chemistry" / "stackex_chemistry_data.txt")
    assert x.shape == (6961, 540) and y.shape == (6961, 175)
    assert int((y.row_lengths() == 0).sum()) == 6
    assert y.nnz / 6961 == pytest.approx(2.109, abs=0.001)


@needs_data
@pytest.mark.parametrize("name, num_train, num_test, num_features, num_labels", EXPECTED)
def test_registered_dataset(name, num_train, num_test, num_features, num_labels):
    d = load_dataset(DataConfig(name=name))
    assert (d.num_train, d.num_test, d.num_features, d.num_labels) == (num_train, num_test, num_features, num_labels)
    norms = np.sqrt(np.bincount(np.repeat(np.arange(d.num_train), d.train_x.row_lengths()),
                                weights=d.train_x.data.astype(np.float64) ** 2, minlength=d.num_train))
    np.testing.assert_allclose(norms[d.train_x.row_lengths() > 0], 1.0, rtol=1e-5)  # L2-normalised rows
    assert d.meta["split"] == ("official" if SOURCES[name].test else "seeded: test_fraction=0.2 split_seed=0")
    card = load_card(name)  # the card's statistics are those of the files
    check_against_card(d.stats(), card)
    for key in ("avg_labels_per_point", "avg_points_per_label"):
        assert d.stats()[key] == pytest.approx(card["statistics"][key], abs=0.001)


@needs_data
def test_every_shared_dataset_is_expected():
    shared = [n for n, s in SOURCES.items() if (SHARED_DATA / s.folder).is_dir()]
    assert sorted(shared) == sorted(e[0] for e in EXPECTED)


def test_seeded_split_is_deterministic_and_disjoint():
    train, test = seeded_split(1000, 0.2, seed=3)
    again = seeded_split(1000, 0.2, seed=3)
    np.testing.assert_array_equal(train, again[0])
    assert len(test) == 200 and len(np.intersect1d(train, test)) == 0 and len(train) + len(test) == 1000
    assert not np.array_equal(test, seeded_split(1000, 0.2, seed=4)[1])
    with pytest.raises(BenchError, match="test_fraction"):
        seeded_split(10, 1.0, 0)


def test_missing_folder_names_the_fix(tmp_path):
    with pytest.raises(BenchError, match="data.path"):
        load_dataset(DataConfig(name="bibtex", path=str(tmp_path / "nowhere")))


@needs_data
def test_run_end_to_end_on_real_data(tmp_path):
    from bench.resolve import resolve
    from bench.experiment import run_experiment

    cfg = resolve(["method=dense", "data=corel5k", "model.embed_dim=16", "train.max_steps=3",
                   f"results_dir={tmp_path}", "tracking.wandb=disabled"])
    record = run_experiment(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["num_labels"] == 374 and record["dataset"]["num_test"] == 500
    assert 0.0 <= record["metrics"]["P@1"] <= 1.0


@pytest.mark.parametrize("name", sorted(XC))
def test_xc_dataset_without_files_says_which_file(name, tmp_path):
    with pytest.raises(BenchError, match="data.path"):  # no folder given and none in shared/data
        load_dataset(DataConfig(name=name, path=str(tmp_path / "absent")))
    with pytest.raises(BenchError, match="no such file") as info:
        load_dataset(DataConfig(name=name, path=str(tmp_path)))
    assert str(tmp_path) in str(info.value) and XC[name].train in str(info.value)
