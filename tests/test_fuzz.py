"""Fuzzing: the readers and the config parser get random and mutated input; the only outcomes
allowed are a valid result or the suite's own error type (``BenchError``). Bounded and fast."""

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bench.resolve import resolve  # noqa: E402
from bench.data import formats  # noqa: E402
from bench.errors import BenchError  # noqa: E402

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

VALID_SPARSE = "3 5\n0:1 2:0.5\n\n4:2.5 1\n"
VALID_BOW = "3 5 4\n0,2 0:1 2:0.5\n 1:1\n3 4:2.5\n"
VALID_ARFF = ("@relation r\n@attribute f0 numeric\n@attribute f1 numeric\n@attribute y0 {0,1}\n"
              "@attribute y1 {0,1}\n@data\n{0 1.5,2 1}\n0,2,1,1\n")


def _mutations():
    """Valid files with random edits: a character replaced, inserted or dropped, lines cut."""
    return st.tuples(
        st.sampled_from([VALID_SPARSE, VALID_BOW, VALID_ARFF]),
        st.lists(st.tuples(st.sampled_from(["replace", "insert", "delete", "truncate"]),
                           st.integers(0, 200), st.sampled_from(list(" :,\n{}0123456789-.eE@abx\x00é"))),
                 min_size=1, max_size=4),
    )


def _apply(text, edits):
    for kind, pos, char in edits:
        pos = pos % (len(text) + 1)
        if kind == "replace" and text:
            pos = min(pos, len(text) - 1)
            text = text[:pos] + char + text[pos + 1:]
        elif kind == "insert":
            text = text[:pos] + char + text[pos:]
        elif kind == "delete":
            text = text[:pos] + text[pos + 1:]
        else:
            text = text[:pos]
    return text


def _read_all(path):
    for read in (lambda: formats.read_sparse_matrix(path), lambda: formats.read_sparse_matrix(path, binary=True),
                 lambda: formats.read_bow(path), lambda: formats.read_arff(path, 2)):
        try:
            read()
        except BenchError:
            pass  # the suite's own, clear error: allowed


@FAST
@given(_mutations())
def test_readers_on_mutated_files(tmp_path_factory, case):
    text, edits = case
    path = tmp_path_factory.mktemp("fuzz") / "f.txt"
    path.write_text(_apply(text, edits), encoding="utf-8")
    _read_all(path)


@FAST
@given(st.binary(max_size=300))
def test_readers_on_random_bytes(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fuzz") / "f.bin"
    path.write_bytes(blob)
    _read_all(path)


KEYS = ["data.num_labels", "train.epochs", "model.fan_in", "train.lr_classifier", "eval.every_epoch",
        "tracking.wandb", "dst.regrow", "method", "seed", "nonsense.key", "data"]


@FAST
@given(st.lists(st.tuples(st.sampled_from(KEYS + [""]),
                          st.text(alphabet=st.characters(codec="utf-8"), max_size=12)), max_size=5),
       st.booleans())
def test_config_parser_on_random_overrides(pairs, with_equals):
    overrides = [f"{k}={v}" if with_equals else f"{k}{v}" for k, v in pairs]
    try:
        resolve(overrides)
    except BenchError:
        pass
