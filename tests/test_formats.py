"""XC sparse text format: round trips, every error with its line, and evaluate_files end to end."""

import numpy as np
import pytest

from bench.data.formats import read_sparse_matrix, write_sparse_matrix
from bench.data.propensity import jain_propensity
from bench.errors import BenchError, DataFormatError
from bench.evaluation import evaluate_files
from bench.metrics import evaluate_topk
from bench.sparse import CSR


def write(tmp_path, text, name="m.txt"):
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_same(a: CSR, b: CSR):
    assert a.shape == b.shape
    np.testing.assert_array_equal(a.indptr, b.indptr)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert (a.data is None) == (b.data is None)
    if a.data is not None:
        np.testing.assert_allclose(a.data, b.data, rtol=6e-6)  # %.6g keeps 6 digits


# -- reading and writing -------------------------------------------------------------------


def test_read_values_sorted_and_empty_rows(tmp_path):
    path = write(tmp_path, "4 6\n5:0.5 1:2\n\n0:1e-3 3:-4\n\n")  # rows 1 and 3 empty
    m = read_sparse_matrix(path)
    assert m.shape == (4, 6)
    np.testing.assert_array_equal(m.indptr, [0, 2, 2, 4, 4])
    np.testing.assert_array_equal(m.indices, [1, 5, 0, 3])  # sorted within each row
    np.testing.assert_allclose(m.data, [2, 0.5, 1e-3, -4])  # values follow their columns
    assert m.data.dtype == np.float32 and m.indices.dtype == np.int64


def test_read_labels_without_values(tmp_path):
    path = write(tmp_path, "3 5\n4 2\n0:1 3\n\n")  # bare ids, and a mix with col:value
    m = read_sparse_matrix(path, binary=True)
    assert m.data is None
    np.testing.assert_array_equal(m.indptr, [0, 2, 4, 4])
    np.testing.assert_array_equal(m.indices, [2, 4, 0, 3])
    np.testing.assert_allclose(read_sparse_matrix(path).data, [1, 1, 1, 1])


def test_crlf_missing_final_newline_and_trailing_blank_lines(tmp_path):
    a = read_sparse_matrix(write(tmp_path, "2 3\r\n0:1 2:2\r\n1:3", "a.txt"))
    b = read_sparse_matrix(write(tmp_path, "2 3\n0:1 2:2\n1:3\n\n\n", "b.txt"))
    assert_same(a, b)


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    dense = rng.random((37, 23)) * (rng.random((37, 23)) < 0.2)
    dense[5] = 0  # an empty row, and an empty last row
    dense[-1] = 0
    m = CSR.from_dense(dense)
    write_sparse_matrix(tmp_path / "x.txt", m)
    assert_same(read_sparse_matrix(tmp_path / "x.txt"), m)

    labels = CSR.from_dense(dense > 0, binary=True)
    write_sparse_matrix(tmp_path / "y.txt", labels)
    text = (tmp_path / "y.txt").read_text()
    assert ":" not in text and text.startswith("37 23\n")
    assert_same(read_sparse_matrix(tmp_path / "y.txt", binary=True), labels)


def test_value_format(tmp_path):
    m = CSR.from_rows([[1, 3], []], 4, values=[[0.123456789, 2.0], []])
    write_sparse_matrix(tmp_path / "a.txt", m, value_format="%.3f")
    assert (tmp_path / "a.txt").read_text() == "2 4\n1:0.123 3:2.000\n\n"
    write_sparse_matrix(tmp_path / "b.txt", m)  # default %.6g
    assert (tmp_path / "b.txt").read_text() == "2 4\n1:0.123457 3:2\n\n"


def test_large_file_is_vectorised(tmp_path, monkeypatch):
    # ~2e5 nonzeros: the fast path has to parse them without falling back to the slow pass
    import bench.data.formats.common as formats

    monkeypatch.setattr(formats, "_raise_first_bad_entry", lambda *a: pytest.fail("slow pass used"))
    rng = np.random.default_rng(1)
    n, L = 20_000, 5_000
    rows = [np.sort(rng.choice(L, size=10, replace=False)) for _ in range(n)]
    m = CSR.from_rows(rows, L, values=[rng.random(10) for _ in range(n)])
    write_sparse_matrix(tmp_path / "big.txt", m)
    assert_same(read_sparse_matrix(tmp_path / "big.txt"), m)


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, line, expected",
    [
        ("", 1, "header"),
        ("3\n", 1, "header"),
        ("a b\n", 1, "header"),
        ("2 3 4\n\n\n", 1, "header"),
        ("-1 3\n", 1, "header"),
        ("3 4\n0:1\n1:1\n", 4, "3 rows"),  # too few rows: the missing row would be line 4
        ("1 4\n0:1\n1:1\n", 3, "1 rows"),  # too many
        ("2 4\n0:1\n1:1 4:2\n", 3, "out of range"),
        ("2 4\n0:1 -1:2\n1:1\n", 2, "out of range"),
        ("2 4\n0:1\n1.5:2\n", 3, "integer column id"),
        ("2 4\nx\n0\n", 2, "integer column id"),
        ("2 4\n0:1\n1:abc\n", 3, "numeric value"),
        ("2 4\n0:1\n1:\n", 3, "numeric value"),
        ("2 4\n0:1\n1:1:1 2\n", 3, "numeric value"),
        ("2 4\n0:1\n1:nan\n", 3, "numeric value"),
        ("2 4\n0:1\n2:1 3:1 2:5\n", 3, "twice"),
        ("2 4\n\n1 1\n", 3, "twice"),
        ("2 4\n0\n99999999999999999999999\n", 3, "out of range"),
    ],
)
def test_errors_name_path_and_line(tmp_path, text, line, expected):
    path = write(tmp_path, text)
    with pytest.raises(DataFormatError, match=expected) as info:
        read_sparse_matrix(path)
    assert info.value.line == line
    assert f"{path}:{line}:" in str(info.value)


# -- evaluate_files ------------------------------------------------------------------------


@pytest.fixture
def xc_files(tmp_path):
    # 4 test points, 5 labels; predictions are scores, label files are bare ids
    labels = CSR.from_rows([[0, 2], [1], [3, 4], []], 5)
    scores = CSR.from_rows(
        [[0, 1, 2], [1, 4], [0, 3], [2]], 5, values=[[0.9, 0.8, 0.1], [0.5, 0.5], [0.7, 0.2], [1.0]]
    )
    train = CSR.from_rows([[0], [0, 1], [2, 3], [0, 4], [1]], 5)
    paths = {name: tmp_path / f"{name}.txt" for name in ("labels", "scores", "train")}
    write_sparse_matrix(paths["labels"], labels)
    write_sparse_matrix(paths["scores"], scores)
    write_sparse_matrix(paths["train"], train)
    return paths, labels, scores, train


def test_evaluate_files_end_to_end(xc_files):
    paths, labels, scores, train = xc_files
    got = evaluate_files(paths["scores"], paths["labels"], paths["train"], k=5)
    # top-1 per row: 0 (hit), 1 (tie with 4 -> lower id, hit), 0 (miss), 2 (empty row) -> 2/4
    assert got["P@1"] == pytest.approx(2 / 4)
    # R@5: row 0 finds {0, 2}, row 1 {1}, row 2 {3} of {3, 4} -> (1 + 1 + 1/2 + 0) / 4
    assert got["R@5"] == pytest.approx(2.5 / 4)
    w = 1 / jain_propensity(train.column_counts(), train.num_rows)
    top = np.array([[0, 1, 2, -1, -1], [1, 4, -1, -1, -1], [0, 3, -1, -1, -1], [2, -1, -1, -1, -1]])
    assert got == pytest.approx(evaluate_topk(top, labels, ks=(1, 3, 5), inv_propensity=w))
    assert list(got)[:3] == ["P@1", "P@3", "P@5"]

    # without train labels the propensities come from the test labels themselves
    own = evaluate_files(paths["scores"], paths["labels"], k=5)
    w_own = 1 / jain_propensity(labels.column_counts(), labels.num_rows)
    assert own == pytest.approx(evaluate_topk(top, labels, inv_propensity=w_own))


def test_evaluate_files_ks(xc_files):
    paths = xc_files[0]
    assert [key for key in evaluate_files(paths["scores"], paths["labels"], k=2) if key.startswith("P@")] == [
        "P@1",
        "P@2",
    ]
    keys = evaluate_files(paths["scores"], paths["labels"], k=7)
    assert [key for key in keys if key.startswith("R@")] == ["R@1", "R@3", "R@5", "R@7"]
    with pytest.raises(BenchError, match="k must be"):
        evaluate_files(paths["scores"], paths["labels"], k=0)


def test_evaluate_files_shape_mismatch(xc_files, tmp_path):
    paths = xc_files[0]
    fewer_rows = write(tmp_path, "3 5\n0\n1\n2\n", "fewer_rows.txt")
    with pytest.raises(BenchError) as info:
        evaluate_files(paths["scores"], fewer_rows)
    assert str(paths["scores"]) in str(info.value) and str(fewer_rows) in str(info.value)

    more_cols = write(tmp_path, "4 6\n0\n1\n2\n\n", "more_cols.txt")
    with pytest.raises(BenchError, match="more_cols.txt"):
        evaluate_files(paths["scores"], more_cols)
    with pytest.raises(BenchError, match="same label set"):
        evaluate_files(paths["scores"], paths["labels"], more_cols)
    # a malformed file surfaces as DataFormatError from the reader
    broken = write(tmp_path, "4 5\n0:x\n\n\n\n", "broken.txt")
    with pytest.raises(DataFormatError, match="broken.txt:2"):
        evaluate_files(broken, paths["labels"])
