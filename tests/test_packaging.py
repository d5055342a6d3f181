"""A wheel install finds its cards, sweeps and baselines as an editable install does: build the
wheel, install it into a folder the repository is not on, and run `xmc-bench` from elsewhere.
Takes ~20-40 s (the wheel build and three interpreter starts)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.data.formats import write_arff, write_mulan_xml
from bench.sparse import CSR

REPO = Path(__file__).resolve().parents[1]


def _run(args, cwd, env, program=sys.executable):
    done = subprocess.run([str(program), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """``(site, env, work)``: the wheel installed in ``site``, an environment whose path holds
    it (and not the repository), and an empty working folder outside the repository."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"  # a copy, so the build leaves nothing in the checkout
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    shutil.copytree(REPO / "bench", src / "bench", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    pip = ["-m", "pip", "--disable-pip-version-check", "--no-input"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(tmp / "dist"), str(src)],
         tmp, dict(os.environ))
    wheel = next((tmp / "dist").glob("xmc_dst_bench-*.whl"))
    site = tmp / "site"
    _run([*pip, "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)], tmp, dict(os.environ))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XMC_", "PYTHON"))}
    env |= {"PYTHONPATH": str(site), "XMC_CACHE_DIR": str(tmp / "cache"), "WANDB_MODE": "disabled"}
    work = tmp / "work"
    work.mkdir()
    return site, env, work


def test_the_installed_package_is_the_wheel(installed):
    site, env, work = installed
    where = _run(["-c", "import bench; print(bench.__file__)"], work, env).strip()
    assert Path(where).is_relative_to(site), where  # not the checkout
    assert {p.name for p in (site / "bench" / "cards").iterdir()} == {p.name for p in (REPO / "bench" / "cards").iterdir()}
    assert (site / "bench" / "baselines" / "published.csv").is_file()
    assert len(list((site / "bench" / "presets" / "paper").glob("*.yaml"))) == 6  # `--preset paper/...`
    assert not (site / "datasets").exists()  # nothing may shadow HF `datasets`


def test_list_and_data_info_read_the_shipped_cards(installed):
    site, env, work = installed
    listed = _run(["list"], work, env, program=site / "bin" / "xmc-bench")  # the wheel's console script
    datasets = next(line for line in listed.splitlines() if line.startswith("datasets:")).split(":", 1)[1]
    names = [n.strip() for n in datasets.split(",")]
    assert {"bibtex", "delicious", "stackex-cs", "amazon-670k", "lf-amazontitles-131k"} <= set(names)

    # a stand-in folder under Bibtex's file names, with the card's counts (files are checked
    # against them): `data info` reads it as bibtex, with the card's A/B
    folder = work / "bibtex-files"
    folder.mkdir()
    labels = [f"t{i}" for i in range(159)]
    write_mulan_xml(folder / "bibtex.xml", labels)
    for split, n in (("train", 4880), ("test", 2515)):
        x = CSR.from_rows([[i % 1836] for i in range(n)], 1836, values=[[1.0]] * n)
        y = CSR.from_rows([[i % 159] for i in range(n)], 159)
        write_arff(folder / f"bibtex-{split}.arff", x, y, label_names=labels)
    info = json.loads(_run(["-m", "bench.cli", "data", "info", "bibtex", "--path", str(folder), "--json"], work, env))
    assert info["num_train"] == 4880 and info["num_labels"] == 159
    card = yaml.safe_load((site / "bench" / "cards" / "bibtex.yaml").read_text())
    assert info["propensity"] == {"A": card["propensity"]["A"], "B": card["propensity"]["B"],
                                  "card": str(site / "bench" / "cards" / "bibtex.yaml")}

    # an Amazon card's values differ from the 0.55 / 1.5 fallback
    got = _run(["-c", "import json; from bench.data.cards import card_propensity; "
                      "print(json.dumps(card_propensity('amazon-670k')))"], work, env)
    assert json.loads(got) == {"A": 0.6, "B": 2.6, "card": str(site / "bench" / "cards" / "amazon-670k.yaml")}
    (work / "results").mkdir()
    (work / "results" / "runs.jsonl").touch()  # no runs of ours yet: the published rows alone
    board = _run(["-m", "bench.cli", "report", "--leaderboard", "bibtex", "--results", str(work / "results"),
                  "--out", str(work / "board.md")], work, env)
    assert "| SLEEC | published |" in board  # a row of the shipped baselines
    sweeps = _run(["-m", "bench.cli", "sweep", "--list"], work, env)
    assert "label-scaling" in sweeps
