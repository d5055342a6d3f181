"""BOW single file, MULAN ARFF + .xml, filter, split index and LF JSON-lines formats:
round trips and every bad-input case with the line it names."""

import numpy as np
import pytest

from bench.data.formats import (
    read_arff, read_bow, read_filter, read_lf_jsonl, read_mulan_xml, read_sparse_matrix, read_split_indices,
    write_arff, write_bow, write_filter, write_lf_jsonl, write_mulan_xml, write_split_indices,
)
from bench.errors import DataFormatError
from bench.sparse import CSR


def write(tmp_path, text, name="f.txt"):
    path = tmp_path / name
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    return path


def assert_same(a: CSR, b: CSR, rtol=1e-6):
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert (a.data is None) == (b.data is None)
    if a.data is not None:
        np.testing.assert_allclose(a.data, b.data, rtol=rtol)


def random_xy(seed=0, n=41, V=30, L=12):
    rng = np.random.default_rng(seed)
    dense_x = rng.integers(1, 5, (n, V)) * (rng.random((n, V)) < 0.2)
    dense_y = rng.random((n, L)) < 0.15
    dense_y[3] = False  # a point without labels
    dense_x[7] = 0  # a point without features
    dense_y[7, 0] = True
    return CSR.from_dense(dense_x.astype(np.float32)), CSR.from_dense(dense_y, binary=True)


# -- BOW -----------------------------------------------------------------------------------


def test_bow_round_trip(tmp_path):
    x, y = random_xy()
    write_bow(tmp_path / "d.txt", x, y)
    lines = (tmp_path / "d.txt").read_text().split("\n")
    assert lines[0] == "41 30 12" and lines[4].startswith(" ")  # row 3 has no labels
    rx, ry = read_bow(tmp_path / "d.txt")
    assert_same(rx, x)
    assert_same(ry, y)


def test_bow_unsorted_and_label_free_rows(tmp_path):
    x, y = read_bow(write(tmp_path, "3 5 4\n3,1 4:2 0:1\n 2:1\n2:0.5\n"))
    np.testing.assert_array_equal(y.indptr, [0, 2, 2, 2])
    np.testing.assert_array_equal(y.indices, [1, 3])
    np.testing.assert_array_equal(x.indices, [0, 4, 2, 2])
    np.testing.assert_allclose(x.data, [1, 2, 1, 0.5])


@pytest.mark.parametrize(
    "text, line, expected",
    [
        ("", 1, "header"),
        ("3 5\n", 1, "num_points num_features num_labels"),
        ("2 5 4\n1 0:1\n", 3, "2 rows"),  # truncated
        ("1 5 4\n1 0:1\n2 1:1\n", 3, "1 rows"),
        ("2 5 4\n1 0:1\n9 1:1\n", 3, "label id 9 out of range"),
        ("2 5 4\n1 0:1\n1 5:1\n", 3, "feature id 5 out of range"),
        ("2 5 4\n1 0:1\nx,1 1:1\n", 3, "integer label ids"),
        ("2 5 4\n1,,2 0:1\n1 1:1\n", 2, "integer label ids"),
        ("2 5 4\n1 0:1\n1 1:abc\n", 3, "numeric value"),
        ("2 5 4\n1 0:1\n1 1\n", 3, "feature:value"),
        ("2 5 4\n1,1 0:1\n1 1:1\n", 2, "label id 1 appears twice"),
        ("2 5 4\n1 0:1 0:2\n1 1:1\n", 2, "feature id 0 appears twice"),
        (b"2 5 4\n1 0:1\n1 1:\xff\n", 3, "not UTF-8"),
    ],
)
def test_bow_errors(tmp_path, text, line, expected):
    path = write(tmp_path, text)
    with pytest.raises(DataFormatError, match=expected) as info:
        read_bow(path)
    assert info.value.line == line and f"{path}:{line}:" in str(info.value)


def test_sparse_matrix_wrong_encoding_names_line(tmp_path):
    path = write(tmp_path, b"2 3\n0:1\n\xe9:1\n")
    with pytest.raises(DataFormatError, match="UTF-8") as info:
        read_sparse_matrix(path)
    assert info.value.line == 3


# -- MULAN ARFF + xml ------------------------------------------------------------------------


def test_xml_round_trip_and_nested_labels(tmp_path):
    names = ["TAG_a", "b c", "it's", "x&y"]
    write_mulan_xml(tmp_path / "l.xml", names)
    assert read_mulan_xml(tmp_path / "l.xml") == names
    nested = '<labels xmlns="http://mulan.sourceforge.net/labels"><label name="A"><label name="A1"/></label><label name="B"/></labels>'
    assert read_mulan_xml(write(tmp_path, nested, "n.xml")) == ["A", "A1", "B"]


@pytest.mark.parametrize("sparse", [True, False])
def test_arff_round_trip(tmp_path, sparse):
    x, y = random_xy(1)
    x = CSR(x.indptr, x.indices, x.data / 3, x.num_cols)  # non-integer values
    fnames = [f"w{i}" for i in range(x.num_cols)]
    fnames[2] = "it's {odd}"
    lnames = [f"TAG_{i}" for i in range(y.num_cols)]
    write_arff(tmp_path / "d.arff", x, y, fnames, lnames, sparse=sparse)
    write_mulan_xml(tmp_path / "d.xml", lnames)
    data = read_arff(tmp_path / "d.arff", read_mulan_xml(tmp_path / "d.xml"))
    assert data.feature_names == fnames and data.label_names == lnames
    assert_same(data.features, x)
    assert_same(data.labels, y)
    assert_same(read_arff(tmp_path / "d.arff", y.num_cols).labels, y)  # the last-N convention


ARFF_HEAD = "% comment\n@relation r\n@attribute f0 numeric\n@attribute 'f 1' {0,1}\n@attribute L0 {0,1}\n@attribute L1 {0,1}\n@data\n"


def test_arff_labels_by_name_anywhere(tmp_path):
    # the label list picks attributes by name, in its own order; everything else is a feature
    path = write(tmp_path, ARFF_HEAD + "{0 1,2 1,3 1}\n0,1,0,1\n\n{}\n")
    data = read_arff(path, ["L1", "f0"])
    assert data.feature_names == ["f 1", "L0"] and data.label_names == ["L1", "f0"]
    np.testing.assert_array_equal(data.labels.to_dense(), [[1, 1], [1, 0], [0, 0]])
    path = write(tmp_path, ARFF_HEAD + "{0 0.5,2 1,3 1}\n0.25,1,0,1\n\n{}\n", "g.arff")
    data = read_arff(path, ["L0", "L1"])
    np.testing.assert_array_equal(data.labels.to_dense(), [[1, 1], [0, 1], [0, 0]])
    np.testing.assert_allclose(data.features.to_dense(), [[0.5, 0], [0.25, 1], [0, 0]])
    with pytest.raises(DataFormatError, match="'f0' has value 0.5: expected 0 or 1"):
        read_arff(path, ["f0"])


@pytest.mark.parametrize(
    "body, line, expected",
    [
        ("{0 1,2 1\n", 8, "closing"),
        ("{0 1,9 1}\n", 8, "attribute index 9 out of range"),
        ("{0 1,x 1}\n", 8, "'index value'"),
        ("{0 1,1}\n", 8, "'index value'"),
        ("{0 1,0 2}\n", 8, "appears twice"),
        ("{0 1}\n1,1,1\n", 9, "3 values: expected 4"),
        ("1,?,0,1\n", 8, "'?'"),
        ("{2 3}\n", 8, "expected 0 or 1"),
    ],
)
def test_arff_row_errors(tmp_path, body, line, expected):
    path = write(tmp_path, ARFF_HEAD + body, "d.arff")
    with pytest.raises(DataFormatError, match=expected) as info:
        read_arff(path, ["L0", "L1"])
    assert info.value.line == line and f"{path}:{line}:" in str(info.value)


@pytest.mark.parametrize(
    "text, line, expected",
    [
        ("", 1, "empty file"),
        ("@relation r\n@attribute a numeric\n", 2, "@data"),  # truncated header
        ("@relation r\nhello\n@data\n", 2, "expected @relation, @attribute"),
        ("@relation r\n@attribute 'a numeric\n@data\n", 2, "unterminated"),
        ("@relation r\n@attribute a string\n@attribute L0 {0,1}\n@data\n", 2, "feature attribute 'a' is string"),
        ("@relation r\n@attribute a numeric\n@attribute L0 {x,y}\n@data\n", 3, "label attribute 'L0'"),
    ],
)
def test_arff_header_errors(tmp_path, text, line, expected):
    path = write(tmp_path, text, "d.arff")
    with pytest.raises(DataFormatError, match=expected) as info:
        read_arff(path, ["L0"])
    assert info.value.line == line


def test_arff_label_list_mismatch_and_bad_xml(tmp_path):
    path = write(tmp_path, ARFF_HEAD + "{0 1}\n", "d.arff")
    with pytest.raises(DataFormatError, match="not attributes of this file.*'L9'"):
        read_arff(path, ["L0", "L9"])
    with pytest.raises(DataFormatError, match=r"b\.xml:3: not well-formed"):
        read_mulan_xml(write(tmp_path, '<labels>\n<label name="a">\n</labels>', "b.xml"))
    with pytest.raises(DataFormatError, match="repeated"):
        read_mulan_xml(write(tmp_path, '<labels><label name="a"/><label name="a"/></labels>', "c.xml"))
    with pytest.raises(DataFormatError, match="no such file"):
        read_mulan_xml(tmp_path / "missing.xml")


# -- filters, splits, LF ---------------------------------------------------------------------


def test_filter_round_trip_and_errors(tmp_path):
    pairs = CSR.from_rows([[1, 3], [], [0]], 4)
    write_filter(tmp_path / "f.txt", pairs)
    assert (tmp_path / "f.txt").read_text() == "0 1\n0 3\n2 0\n"
    assert_same(read_filter(tmp_path / "f.txt", 3, 4), pairs)
    assert_same(read_filter(write(tmp_path, "2 0\n0 3\n0 1\n2 0\n", "u.txt"), 3, 4), pairs)  # unsorted, repeated
    assert read_filter(write(tmp_path, "", "e.txt"), 3, 4).nnz == 0
    with pytest.raises(DataFormatError, match="out of range") as info:
        read_filter(write(tmp_path, "0 1\n3 0\n", "r.txt"), 3, 4)
    assert info.value.line == 2
    with pytest.raises(DataFormatError, match="two 0-based integers"):
        read_filter(write(tmp_path, "0 1 2\n", "w.txt"), 3, 4)


def test_split_indices(tmp_path):
    write_split_indices(tmp_path / "s.txt", [np.array([4, 0, 2]), np.array([1, 2, 3])])
    assert (tmp_path / "s.txt").read_text() == "5 2\n1 3\n3 4\n"
    np.testing.assert_array_equal(read_split_indices(tmp_path / "s.txt", 5), [4, 0, 2])
    np.testing.assert_array_equal(read_split_indices(tmp_path / "s.txt", 5, column=1), [1, 2, 3])
    with pytest.raises(DataFormatError, match="out of range"):
        read_split_indices(tmp_path / "s.txt", 4)
    with pytest.raises(DataFormatError, match="repeats"):
        read_split_indices(write(tmp_path, "1\n1\n", "d.txt"), 4)
    with pytest.raises(DataFormatError, match="expected 1 like the first line") as info:
        read_split_indices(write(tmp_path, "1\n2 3\n", "w.txt"), 4)
    assert info.value.line == 2


def test_lf_jsonl_round_trip_and_errors(tmp_path):
    targets = CSR.from_rows([[2, 0], [], [1]], 3)
    targets = CSR.from_rows([sorted(targets.row(i)) for i in range(3)], 3)
    write_lf_jsonl(tmp_path / "trn.json", ["a", "b", "c"], ["T a", "T b", "Tü c"], ["body", "", "x"], targets)
    got = read_lf_jsonl(tmp_path / "trn.json", num_labels=3)
    assert got.uids == ["a", "b", "c"] and got.titles[2] == "Tü c" and got.contents == ["body", "", "x"]
    assert_same(got.targets, targets)
    labels = read_lf_jsonl(tmp_path / "trn.json")  # a label file: no targets asked for
    assert labels.targets is None
    with pytest.raises(DataFormatError, match="target_ind") as info:
        read_lf_jsonl(write(tmp_path, '{"uid": 1, "title": "t", "target_ind": [0]}\n{"uid": 2, "title": "u", "target_ind": [5]}\n'), 3)
    assert info.value.line == 2
    with pytest.raises(DataFormatError, match="JSON object"):
        read_lf_jsonl(write(tmp_path, '{"uid": 1, "title": "t"\n', "b.json"))
    with pytest.raises(DataFormatError, match="empty file"):
        read_lf_jsonl(write(tmp_path, "\n", "e.json"))


def test_gzip_files_are_read_and_a_truncated_one_is_an_error(tmp_path):
    import gzip

    text = '{"uid": "a", "title": "t", "target_ind": [1]}\n'
    (tmp_path / "trn.json.gz").write_bytes(gzip.compress(text.encode()))
    assert read_lf_jsonl(tmp_path / "trn.json.gz", num_labels=2).uids == ["a"]
    (tmp_path / "cut.json.gz").write_bytes(gzip.compress(text.encode())[:-6])
    with pytest.raises(DataFormatError, match="truncated or damaged gzip"):
        read_lf_jsonl(tmp_path / "cut.json.gz")
