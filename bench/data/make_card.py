"""A card for a user's own dataset, written from its files (``xmc-bench data card``).

The files are read as the card says they will be read (same reader, split and features as
``data=path/to/NAME.yaml`` later), so the statistics the card records are those a run sees and
``xmc-bench data prepare`` checks. The card goes beside the files unless another folder is
given; its ``source.folder`` is relative to the card file.
"""

from __future__ import annotations

import os
from pathlib import Path

from bench.config import DataConfig
from bench.data.cards import DEFAULT_PROPENSITY, read_card, source_of
from bench.data.formats import READERS
from bench.data.real import load_source
from bench.errors import BenchError

FEATURES_DOC = {
    "tfidf": "counts or binary words -> (1 + log tf) * idf of the train split, rows L2-normalised",
    "l2": "as in the files, rows L2-normalised",
    "as-is": "as in the files",
}
HEADER = """\
# Dataset card written by `xmc-bench data card` from the files named below; edit freely.
# Run:      xmc-bench run method=NAME data=path/to/{name}.yaml
# Prepare:  xmc-bench data prepare path/to/{name}.yaml   (checks the counts below, caches the data)
# A relative source.folder is taken from this file's folder.
# propensity: Jain et al. 2016's default A = {A}, B = {B} (their rule gives Amazon sets 0.6 / 2.6 and
# Wikipedia sets 0.5 / 0.4); change it if your data is one of those.
"""

def make_card(name: str, fmt: str, files: dict, out_dir=None, features: str = "", title: str = "",
              labels_by: str = "", A: float = DEFAULT_PROPENSITY["A"], B: float = DEFAULT_PROPENSITY["B"]) -> Path:
    """Write ``<out_dir>/<name>.yaml`` for the dataset in ``files`` (paths by key: train, test,
    xml, test_filter, texts) of format ``fmt``, with the statistics of those files; returns the
    card's path. ``out_dir`` defaults to the files' folder, ``features`` to ``tfidf`` for
    ``arff``/``xc-bow`` and ``l2`` for the XC split formats (their BoW files are TF-IDF already)."""
    from bench.data.catalog import DATASETS

    if not name or Path(name).name != name or name.endswith((".yaml", ".yml")):
        raise BenchError(f"--name {name!r}: expected a plain dataset name such as 'enron'")
    if name in DATASETS:
        raise BenchError(f"--name {name!r} is a shipped dataset; choose another name so records and "
                         "leaderboards keep the two apart")
    reader = READERS.get(fmt)
    files = {k: v for k, v in files.items() if v}
    paths = [Path(p) for k, v in files.items() for p in (v if k == "texts" else [v])]
    folders = {p.parent.resolve() for p in paths}
    if len(folders) != 1:
        raise BenchError(f"the files are in {len(folders)} folders ({', '.join(map(str, sorted(folders)))}): "
                         "expected one folder holding them all")
    folder = folders.pop()
    names = {k: ([Path(p).name for p in v] if k == "texts" else _prefix(fmt, Path(v).name)) for k, v in files.items()}
    out_dir = Path(out_dir).resolve() if out_dir else folder
    out = out_dir / f"{name}.yaml"
    features = features or ("tfidf" if fmt in ("arff", "xc-bow") else "l2")
    card = {
        "name": name,
        "title": title or name,
        "source": {"folder": os.path.relpath(folder, out_dir),
                   "provenance": f"written by `xmc-bench data card` from {', '.join(str(p) for p in paths)}"},
        "format": fmt,
        "files": names,
        "features": features,
        **({"labels_by": labels_by} if labels_by else {}),
        "split": "",
        "statistics": {},
        "propensity": {"A": A, "B": B},
        "conventions": {"features": FEATURES_DOC[features],
                        "metrics": "P@k, nDCG@k, PSP@k at k = 1, 3, 5 over all test points (pyxclib conventions)"},
    }
    missing = [k for k in reader.required if k not in names]
    if missing:
        raise BenchError(f"format {fmt} needs {', '.join('--' + k.replace('_', '-') for k in missing)}")
    data = DataConfig(name=name)
    card["split"] = ("official (the train and test files as given)" if "test" in names else
                     f"seeded (no split given): test = a random {data.test_fraction:.0%} of the points drawn by "
                     f"numpy.random.default_rng(data.split_seed={data.split_seed}).permutation; "
                     "data.test_fraction / data.split_seed change it")
    out_dir.mkdir(parents=True, exist_ok=True)  # source.folder is relative to it
    dataset = load_source(name, source_of(card, base=out_dir), data)
    stats = dataset.stats()
    card["statistics"] = {
        **({} if "test" in names else {"num_points": dataset.num_train + dataset.num_test}),
        **{k: (round(v, 3) if isinstance(v, float) else v) for k, v in stats.items()
           if k in ("num_train", "num_test", "num_features", "num_labels", "avg_labels_per_point", "avg_points_per_label")},
    }
    _write(out, card)
    read_card(out)  # what was written reads back as a valid card
    return out


def _prefix(fmt: str, file_name: str) -> str:
    """The XC split formats name a split by its prefix: ``trn_X_Xf.txt`` or ``trn_X_Y.txt`` -> ``trn``."""
    if fmt in ("xc-split", "lf"):
        for suffix in ("_X_Xf.txt", "_X_Y.txt"):
            if file_name.endswith(suffix):
                return file_name[: -len(suffix)]
    return file_name


def _write(out: Path, card: dict) -> None:
    import yaml

    header = HEADER.format(name=card["name"], **card["propensity"])
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(header + yaml.safe_dump(card, sort_keys=False, allow_unicode=True, width=110), encoding="utf-8")
    tmp.replace(out)
