"""The stand-in files in tests/data: the AttentionXML-style `text` format (label names numbered
in sorted order, file:line errors, the `_texts.txt` spelling), the shipped `*-text` cards, the
LF options `data.title_only` and `data.label_text_points`, and reference cluster files
(`aux.clusters_file`), each end to end where a run uses it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from test_transformer_encoder import tiny_bert  # noqa: F401  (the fixture: a tiny random BERT)

from bench.cli import main
from bench.config import DataConfig
from bench.resolve import resolve
from bench.data.cache import cache_key
from bench.data.cards import load_card
from bench.data.catalog import load_dataset
from bench.data.clusters import read_cluster_file
from bench.errors import BenchError, ConfigError, DataFormatError
from bench.record import read_records

# the stand-ins in tests/data are read under shipped cards' names, whose counts they cannot hold
pytestmark = pytest.mark.usefixtures("stand_in_files")

DATA = Path(__file__).parent / "data"
NAMES = ["C", "a_label", "b_label", "c", "d9"]  # Python's sorted order of the stand-in's label names


def text_data(folder, tmp_path, name="wiki10-31k-text", **keys):
    return load_dataset(DataConfig(name=name, path=str(folder), cache_dir=str(tmp_path / "cache"), **keys))


@pytest.fixture
def text_folder(tmp_path):
    """A copy of tests/data/text to break."""
    return Path(shutil.copytree(DATA / "text", tmp_path / "text"))


# -- the text format ---------------------------------------------------------------------


def test_text_stand_in_reads_with_sorted_label_names(tmp_path):
    d = text_data(DATA / "text", tmp_path)
    assert (d.num_train, d.num_test, d.num_labels, d.num_features) == (8, 4, 5, 0)
    lines = (DATA / "text" / "train_labels.txt").read_text().splitlines()
    for i, line in enumerate(lines):  # every row holds the ids of its names in sorted-name order
        assert d.train_y.row(i).tolist() == sorted(NAMES.index(n) for n in line.split())
    assert d.test_y.row(1).tolist() == [0, 4]  # "C d9": d9 appears only in the test file
    assert d.train_text == (DATA / "text" / "train_raw_texts.txt").read_text().splitlines()
    assert d.test_text[0] == "w1 w3" and d.label_text is None
    assert d.meta["raw_text"]["files"][0] == "train_raw_texts.txt"


def test_texts_spelling_is_found_when_raw_texts_is_absent(text_folder, tmp_path):
    (text_folder / "train_raw_texts.txt").rename(text_folder / "train_texts.txt")
    d = text_data(text_folder, tmp_path)
    assert d.num_train == 8 and d.meta["raw_text"]["files"][0] == "train_texts.txt"


def test_line_count_mismatch_names_both_files_and_the_line(text_folder, tmp_path):
    labels = text_folder / "test_labels.txt"
    labels.write_text("".join(line + "\n" for line in labels.read_text().splitlines()[:-1]))
    with pytest.raises(DataFormatError) as info:
        text_data(text_folder, tmp_path)
    assert info.value.path == str(text_folder / "test_raw_texts.txt") and info.value.line == 4
    assert "test_raw_texts.txt has 4 lines" in str(info.value) and str(labels) + " has 3" in str(info.value)


def test_empty_label_line_is_an_error_at_its_line(text_folder, tmp_path):
    labels = text_folder / "train_labels.txt"
    lines = labels.read_text().splitlines()
    lines[2] = "   "
    labels.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match="no label names") as info:
        text_data(text_folder, tmp_path)
    assert (info.value.path, info.value.line) == (str(labels), 3)


def test_bad_bytes_and_missing_files_name_the_file(text_folder, tmp_path):
    (text_folder / "train_raw_texts.txt").write_bytes(b"w1\nw2 \xff\n" + b"w3\n" * 6)
    with pytest.raises(DataFormatError, match="not UTF-8") as info:
        text_data(text_folder, tmp_path)
    assert info.value.line == 2
    (text_folder / "test_labels.txt").unlink()
    (text_folder / "train_raw_texts.txt").write_text("w1\n" * 8)
    with pytest.raises(DataFormatError, match="no such file") as info:
        text_data(text_folder, tmp_path)
    assert info.value.path == str(text_folder / "test_labels.txt")


def test_a_name_repeated_on_a_line_counts_once(text_folder, tmp_path):
    labels = text_folder / "train_labels.txt"
    lines = labels.read_text().splitlines()
    lines[1] = "C C"
    labels.write_text("\n".join(lines) + "\n")
    d = text_data(text_folder, tmp_path)
    assert d.train_y.row(1).tolist() == [0] and d.meta["raw_text"]["repeated_label_names"] == 1


def test_user_card_of_text_stand_in_prepares_and_caches_texts(tmp_path):
    from bench.data.cache import load_cached

    card = str(DATA / "text" / "tiny-text.yaml")
    assert main(["data", "prepare", card, f"data.cache_dir={tmp_path / 'cache'}"]) == 0  # counts checked
    cached = load_cached(DataConfig(name=card, cache_dir=str(tmp_path / "cache")))
    assert cached is not None and list(cached.train_text) == text_data(DATA / "text", tmp_path).train_text
    assert cached.num_labels == 5 and cached.num_features == 0


@pytest.mark.parametrize("name, labels, a_b", [("wiki10-31k-text", 30938, (0.5, 0.4)),
                                               ("wiki-500k-text", 501070, (0.5, 0.4)),
                                               ("amazon-670k-text", 670091, (0.6, 2.6)),
                                               ("amazon-3m-text", 2812281, (0.6, 2.6))])
def test_text_cards(name, labels, a_b):
    card = load_card(name)
    assert card["format"] == "text" and card["statistics"]["num_labels"] == labels
    assert (card["propensity"]["A"], card["propensity"]["B"]) == a_b
    assert card["files"]["train_labels"] == "train_labels.txt"
    assert resolve([f"data={name}"]).model.encoder == "transformer"  # the card's recommended encoder
    assert resolve([f"data={name}", "model.encoder=bow"]).model.encoder == "bow"  # the user's wins


def test_configs_propensity_on_wikipedia_cards():
    for name in ("wiki10-31k", "lf-wikiseealso-320k"):
        assert load_card(name)["propensity"] == {"A": 0.5, "B": 0.4}


def test_text_card_needs_label_files(tmp_path):
    card = (Path(__file__).parents[1] / "bench" / "cards" / "wiki10-31k-text.yaml").read_text()
    path = tmp_path / "mine.yaml"
    path.write_text(card.replace("name: wiki10-31k-text", "name: mine").replace("  test_labels: test_labels.txt\n", ""))
    with pytest.raises(DataFormatError, match="need test_labels"):
        load_card(str(path))


def test_transformer_trains_on_text_stand_in(tiny_bert, tmp_path):  # noqa: F811
    assert main(["run", "method=ffi-set", "data=wiki10-31k-text", f"data.path={DATA / 'text'}",
                 f"model.encoder_path={tiny_bert}", "model.max_len=16", "model.fan_in=2", "train.max_steps=2",
                 "train.batch_size=4", "eval.batch_size=4", f"results_dir={tmp_path / 'results'}",
                 "tracking.wandb=disabled", f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["status"] == "ok" and record["dataset"]["num_labels"] == 5
    assert record["card_overrides"] == {"model.encoder": "transformer"}


# -- LF options ---------------------------------------------------------------------------


def lf_data(tmp_path, **keys):
    return text_data(DATA / "lf", tmp_path, name="lf-wikiseealso-320k", **keys)


def test_lf_stand_in_title_and_content(tmp_path):
    d = lf_data(tmp_path)
    assert d.train_text[0] == "w0 w0 w9 w8" and d.train_text[1] == "w1 w3" and d.label_text[1] == "w1 w5"
    assert d.test_filter is not None and d.test_filter.row(0).tolist() == [0]


def test_title_only(tmp_path):
    d = lf_data(tmp_path, title_only=True)
    assert d.train_text[0] == "w0 w0" and d.label_text[1] == "w1" and d.test_text[0].split() == d.test_text[0].split()[:2]
    assert d.meta["raw_text"]["text"].startswith("title only")
    with pytest.raises(ConfigError, match="data.title_only"):
        text_data(DATA / "text", tmp_path, title_only=True)


def test_label_text_points(tmp_path):
    plain, d = lf_data(tmp_path), lf_data(tmp_path, label_text_points=True)
    L = plain.num_labels
    assert d.num_train == plain.num_train + L and d.meta["label_text_points"] == L
    assert d.train_text[plain.num_train:] == plain.label_text
    for label in range(L):  # each label's point is labelled with that label alone, without features
        row = plain.num_train + label
        assert d.train_y.row(row).tolist() == [label] and d.train_x.row(row).size == 0
    assert np.array_equal(d.train_y.indices[: plain.train_y.nnz], plain.train_y.indices)
    with pytest.raises(ConfigError, match="has none"):
        text_data(DATA / "text", tmp_path, label_text_points=True)
    with pytest.raises(ConfigError, match="needs model.encoder=transformer"):
        resolve(["data=lf-wikiseealso-320k", "data.label_text_points=true"])


def test_new_data_keys_at_default_keep_cache_keys():
    assert "title_only" not in cache_key(DataConfig()) and "label_text_points" not in cache_key(DataConfig())
    assert cache_key(DataConfig(title_only=True))["title_only"] is True


def test_lf_label_points_train_a_transformer(tiny_bert, tmp_path):  # noqa: F811
    assert main(["run", "method=dense", "data=lf-wikiseealso-320k", f"data.path={DATA / 'lf'}",
                 "data.label_text_points=true", "data.title_only=true", "model.encoder=transformer",
                 f"model.encoder_path={tiny_bert}", "model.max_len=16", "train.max_steps=2", "train.batch_size=4",
                 "eval.batch_size=4", f"results_dir={tmp_path / 'results'}", "tracking.wandb=disabled",
                 f"data.cache_dir={tmp_path / 'cache'}"]) == 0
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["status"] == "ok" and record["dataset"]["num_train"] == 6 + 5


# -- reference cluster files --------------------------------------------------------------


def save_groups(path, groups):
    array = np.empty(len(groups), object)
    for i, g in enumerate(groups):
        array[i] = np.asarray(g)
    np.save(path, array, allow_pickle=True)
    return path


def test_cluster_file_stand_in():
    clusters = read_cluster_file(DATA / "text" / "label_group2.npy", 5)
    assert clusters.tolist() == [1, 0, 0, 1, 0]


def test_equal_sized_clusters_as_a_2d_array(tmp_path):
    np.save(tmp_path / "g.npy", np.array([[0, 3], [1, 2]]))
    assert read_cluster_file(tmp_path / "g.npy", 4).tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("groups, num_labels, message", [
    ([[0, 1], [2]], 4, r"1 of the 4 labels are in no cluster \(the first: 3\)"),
    ([[0, 1], [1, 2]], 3, "label 1 is in cluster 0 and again in cluster 1"),
    ([[0, 0], [1, 2]], 3, "label 0 is in cluster 0 and again in cluster 0"),
    ([[0, 1], [2, 3]], 3, r"cluster 1 holds label id 3: expected ids in \[0, 3\)"),
    ([[0, 1], []], 2, "cluster 1 is .*: expected a non-empty 1-D array of integer label ids"),
    ([[0.0, 1.0]], 2, "cluster 0 is float64"),
])
def test_bad_cluster_files_name_the_file(tmp_path, groups, num_labels, message):
    path = save_groups(tmp_path / "label_group.npy", groups)
    with pytest.raises(DataFormatError, match=message) as info:
        read_cluster_file(path, num_labels)
    assert info.value.path == str(path)


def test_missing_or_foreign_cluster_file(tmp_path):
    with pytest.raises(DataFormatError, match="no such cluster file"):
        read_cluster_file(tmp_path / "nope.npy", 3)
    (tmp_path / "text.npy").write_text("0 1 2\n")
    with pytest.raises(DataFormatError, match="not a numpy .npy file"):
        read_cluster_file(tmp_path / "text.npy", 3)


def test_aux_branch_uses_the_cluster_file(tmp_path):
    common = ["run", "method=ffi-set-aux", "data=lf-wikiseealso-320k", f"data.path={DATA / 'lf'}", "model.embed_dim=8",
              "model.fan_in=2", "train.max_steps=2", "train.batch_size=4", "eval.batch_size=4",
              f"results_dir={tmp_path / 'results'}", "tracking.wandb=disabled", f"data.cache_dir={tmp_path / 'cache'}"]
    assert main([*common, f"aux.clusters_file={DATA / 'text' / 'label_group2.npy'}"]) == 0
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["aux"]["num_clusters"] == 2 and record["aux"]["centroids"] == "file"
    assert (record["aux"]["cluster_size_min"], record["aux"]["cluster_size_max"]) == (2, 3)
    assert record["aux"]["clusters_file"].endswith("label_group2.npy")
    assert main([*common, f"aux.clusters_file={DATA / 'text' / 'label_group2.npy'}", "aux.num_clusters=3"]) != 0
    assert "holds 2 clusters" in list(read_records(tmp_path / "results" / "runs.jsonl"))[-1]["reason"]


def test_cluster_file_and_cluster_order_exclude_each_other():
    with pytest.raises(ConfigError, match="aux.clusters_file"):
        resolve(["method=ffi-group-set", "model.group_order=cluster", "aux.clusters_file=x.npy"])


def test_relative_card_file_and_bow_encoder_on_text_data(tmp_path, monkeypatch):
    monkeypatch.chdir(DATA.parent.parent)  # the card file by a relative path: its folder, not the shared root
    assert main(["run", "method=dense", "data=tests/data/text/tiny-text.yaml", "model.encoder=bow",
                 f"results_dir={tmp_path / 'results'}", "tracking.wandb=disabled",
                 f"data.cache_dir={tmp_path / 'cache'}"]) != 0
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert "no bag-of-words features" in record["reason"] and record["num_labels"] == 5


# -- the other formats' stand-ins -----------------------------------------------------------


@pytest.mark.parametrize("name, path, shape", [
    ("eurlex-4k", DATA / "xc-bow", (6, 3, 10, 4)),
    (str(DATA / "arff" / "tiny-arff.yaml"), "", (6, 3, 10, 4)),
    ("lf-amazontitles-131k", DATA / "lf", (6, 3, 8, 5)),
    (str(DATA / "text" / "tiny-text.yaml"), "", (8, 4, 0, 5)),
])
def test_every_stand_in_loads(tmp_path, name, path, shape):
    d = load_dataset(DataConfig(name=name, path=str(path), cache_dir=str(tmp_path / "cache")))
    assert (d.num_train, d.num_test, d.num_features, d.num_labels) == shape


def test_bow_stand_in_trains(tmp_path):
    assert main(["run", "method=ffi-set", "data=eurlex-4k", f"data.path={DATA / 'xc-bow'}", "model.embed_dim=8",
                 "model.fan_in=2", "train.max_steps=2", "train.batch_size=4", "eval.batch_size=4",
                 f"results_dir={tmp_path / 'results'}", "tracking.wandb=disabled",
                 f"data.cache_dir={tmp_path / 'cache'}"]) == 0
