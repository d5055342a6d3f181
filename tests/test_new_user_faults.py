"""Faults a new user hit (issue 17): a data folder given without a dataset, a truncated training
file, a killed sweep's orphans and a configuration run twice at once, raw tracebacks for bad
sweep/config files and negative counts, a run that is all warm-up, and what the console and the
W&B folder say."""

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from bench.cli import main
from bench.config import DataConfig, config_hash
from bench.resolve import resolve
from bench.data.catalog import load_dataset
from bench.data.formats import write_arff, write_bow, write_mulan_xml
from bench.data.make_card import make_card
from bench.data.real import shared_data_root
from bench.errors import BenchError, ConfigError, DataFormatError
from bench.record import read_records
from bench.sparse import CSR

SHARED = shared_data_root()  # $XMC_SHARED_DATA, else ../shared/data beside the repository


def _rows(n, width, per_row, seed):
    rng = np.random.default_rng(seed)
    return [np.sort(rng.choice(width, size=rng.integers(1, per_row + 1), replace=False)) for _ in range(n)]


def _arff_folder(folder: Path, n: int = 50) -> Path:
    """A MULAN dataset (ARFF + .xml, no split) of ``n`` points, 30 features, 7 labels."""
    folder.mkdir(exist_ok=True)
    rows = _rows(n, 30, 6, 0)
    x = CSR.from_rows(rows, 30, values=[np.ones(len(r)) for r in rows])
    y = CSR.from_rows(_rows(n, 7, 3, 1), 7)
    labels = [f"L{i}" for i in range(7)]
    write_mulan_xml(folder / "mine.xml", labels)
    write_arff(folder / "mine.arff", x, y, label_names=labels)
    return folder


RUN = ["method=dense", "model.embed_dim=16", "train.epochs=1", "train.batch_size=16", "eval.batch_size=16",
       "tracking.wandb=disabled"]


# -- item 4: data.path without a dataset name ------------------------------------------------


def test_data_path_without_a_dataset_and_no_card_is_a_config_error(tmp_path):
    folder = _arff_folder(tmp_path / "files")
    with pytest.raises(ConfigError, match=r"data.path=.* is set but data.name='synthetic'.*no card file"):
        resolve(["method=dense", f"data.path={folder}"])
    # a shipped dataset's folder name says which one was meant
    (tmp_path / "Bibtex").mkdir()
    with pytest.raises(ConfigError, match="data=bibtex"):
        resolve(["method=dense", f"data.path={tmp_path / 'Bibtex'}"])


def test_data_path_with_a_card_there_runs_that_dataset(tmp_path):
    folder = _arff_folder(tmp_path / "files")
    card = make_card("mine", "arff", {"train": str(folder / "mine.arff"), "xml": str(folder / "mine.xml")})
    (folder / "notes.yaml").write_text("just: notes\n")  # another YAML file is not a card
    cfg = resolve([*RUN, f"data.path={folder}", f"results_dir={tmp_path / 'results'}",
                   f"data.cache_dir={tmp_path / 'cache'}"])
    assert cfg.data.name == str(card)
    from bench.experiment import run_experiment

    record = run_experiment(cfg)
    assert record["status"] == "ok", record.get("error")
    assert record["dataset"]["name"] == "mine" and record["dataset"]["num_train"] == 40


# -- item 6: the card's counts are checked whenever files are read -------------------------


def test_a_truncated_bibtex_training_file_is_refused(tmp_path):
    if not (SHARED / "Bibtex" / "bibtex-train.arff").is_file():
        pytest.skip("no shared Bibtex files")
    folder = tmp_path / "Bibtex"
    shutil.copytree(SHARED / "Bibtex", folder)
    train = folder / "bibtex-train.arff"
    train.chmod(0o644)
    lines = train.read_text().splitlines(keepends=True)
    data = next(i for i, line in enumerate(lines) if line.strip().lower() == "@data")
    train.write_text("".join(lines[: data + 1 + 2001]))  # cut at a line boundary: 2,001 of 4,880 rows
    with pytest.raises(DataFormatError) as err:
        load_dataset(DataConfig(name="bibtex", path=str(folder)))
    message = str(err.value)
    assert str(train) in message and "num_train 2001" in message and "statistics.num_train: 4880" in message


def test_a_user_card_checks_its_counts_too(tmp_path):
    folder = _arff_folder(tmp_path / "files")
    card = make_card("mine", "arff", {"train": str(folder / "mine.arff"), "xml": str(folder / "mine.xml")})
    assert load_dataset(DataConfig(name=str(card))).num_train == 40
    _arff_folder(folder, n=35)  # the files change under the card
    with pytest.raises(DataFormatError, match=r"mine.arff: holds num_points 35 \(the card mine.yaml says "
                                              r"statistics.num_points: 50\)"):
        load_dataset(DataConfig(name=str(card)))


# -- item 11: clear errors instead of tracebacks ---------------------------------------------


def test_sweep_base_as_a_list_of_overrides(tmp_path):
    from bench.sweep import load_sweep

    path = tmp_path / "mine.yaml"
    path.write_text("base: [method=dense, data.num_labels=64]\ngrid: {seed: [0, 1]}\n")
    assert load_sweep(str(path)).expand([]) == [["method=dense", "data.num_labels=64", "seed=0"],
                                                ["method=dense", "data.num_labels=64", "seed=1"]]
    path.write_text("base: [method dense]\n")
    with pytest.raises(ConfigError, match=f"sweep file {path}: base must be a mapping .* or a list of 'key=value'"):
        load_sweep(str(path))
    path.write_text("grid: [seed=1]\n")
    with pytest.raises(ConfigError, match="grid must be a mapping"):
        load_sweep(str(path))


def test_files_that_are_not_utf8_are_named(tmp_path, capsys):
    from bench.sweep import load_sweep

    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("train: {epochs: 1}  # caf\xe9\n".encode("latin-1"))
    assert main(["run", "method=dense", "--config", str(bad)]) == 2
    assert f"config file {bad} is not UTF-8 text" in capsys.readouterr().err
    with pytest.raises(ConfigError, match=f"sweep file {bad} is not UTF-8 text"):
        load_sweep(str(bad))


def test_a_negative_count_names_file_line_and_the_card_field(tmp_path):
    folder = tmp_path / "bow"
    folder.mkdir()
    x = CSR.from_rows([[0, 2], [1], [3, 4], [0]] * 5, 6, values=[[1.0, 2.0], [1.0], [3.0, 1.0], [2.0]] * 5)
    y = CSR.from_rows([[0], [1], [0, 2], [1]] * 5, 3)
    write_bow(folder / "mine.txt", x, y)
    card = make_card("mine", "xc-bow", {"train": str(folder / "mine.txt")})
    bad = x.data.copy()
    bad[3] = -3.0  # feature 3 of row 2 (0-based): line 4, after the header
    write_bow(folder / "mine.txt", CSR(x.indptr, x.indices, bad, x.num_cols), y)
    with pytest.raises(DataFormatError) as err:
        load_dataset(DataConfig(name=str(card)))
    message = str(err.value)
    assert message.startswith(f"{folder / 'mine.txt'}:4: feature 3 has the negative value -3")
    assert "`features: tfidf`" in message
    assert "features=l2" not in message  # no config key of that name


# -- item 5: workers die with the sweep; one process per configuration -----------------------


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return "gone"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_killed_sweep_takes_its_workers_with_it(tmp_path):
    pid_file = tmp_path / "child.pid"
    # stands in for the worker's Python: records its pid and waits, as a long run would
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!/bin/sh\necho $$ > {pid_file}.tmp && mv {pid_file}.tmp {pid_file}\nexec sleep 120\n")
    fake.chmod(0o755)
    script = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        import bench.sweep as sweep
        sys.executable = {str(fake)!r}
        sweep.run_isolated(["method=dense", "results_dir={tmp_path / 'results'}"], "g", Path({str(tmp_path)!r}))
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.getcwd()})
    child = None
    try:
        for _ in range(600):
            if pid_file.is_file():
                child = int(pid_file.read_text())
                break
            assert parent.poll() is None, "the sweep process ended before starting its worker"
            time.sleep(0.1)
        assert child is not None, "the worker never started"
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait()
        for _ in range(200):  # the kernel's signal arrives at once; allow a loaded machine its time
            if _state(child) in ("gone", "Z"):
                break
            time.sleep(0.1)
        assert _state(child) in ("gone", "Z"), "the worker outlived its sweep"
    finally:
        if parent.poll() is None:
            parent.kill()
        if child is not None and _state(child) not in ("gone", "Z"):
            os.kill(child, signal.SIGKILL)


def test_a_configuration_locked_by_another_process_is_not_run_twice(tmp_path, tiny_overrides, capsys):
    from bench.sweep import run_configs

    overrides = ["method=dense", *tiny_overrides]
    cfg = resolve(overrides)
    lock = Path(cfg.results_dir) / "checkpoints" / f"{config_hash(cfg)}.lock"
    lock.parent.mkdir(parents=True)
    with lock.open("w") as held:  # another process is running it: it holds the lock
        fcntl.flock(held, fcntl.LOCK_EX)
        _, records, skipped = run_configs("twice", [overrides])
        assert records == [] and skipped == 1
        assert not (Path(cfg.results_dir) / "runs.jsonl").exists() or not read_records(
            Path(cfg.results_dir) / "runs.jsonl")
        # a plain `run` stops with a message and the exit code a sweep reads as "running elsewhere"
        assert main(["run", *overrides]) == 75
        assert "being run by another process" in capsys.readouterr().err
    # once it is free, it runs, and leaves neither lock nor checkpoint folder behind
    _, records, skipped = run_configs("twice", [overrides])
    assert [r["status"] for r in records] == ["ok"] and skipped == 0
    assert not (Path(cfg.results_dir) / "checkpoints").exists()


def test_the_lock_is_held_for_the_run_and_released_after(tmp_path, tiny_overrides):
    from bench.checkpoint import RunLock
    from bench.errors import RunningElsewhere
    from bench.experiment import run_experiment
    from bench.train import add_step_hook

    cfg = resolve(["method=dense", *tiny_overrides, "checkpoint.enabled=true", "checkpoint.every=2"])
    seen = []

    def second_process_tries(step):
        if step == 3:
            try:
                RunLock.of(cfg).acquire()
                seen.append("acquired")
            except RunningElsewhere:
                seen.append("refused")

    remove = add_step_hook(second_process_tries)
    try:
        record = run_experiment(cfg)
    finally:
        remove()
    assert record["status"] == "ok" and seen == ["refused"]
    with RunLock.of(cfg):  # free again
        pass


# -- item 13: a run that is all warm-up says so ----------------------------------------------


def test_warm_up_longer_than_the_run_is_warned_and_recorded(tmp_path, capsys):
    from bench.experiment import run_experiment

    base = ["method=dense", "data.num_train=2000", "data.num_test=200", "data.num_labels=64",
            "data.num_features=300", "model.embed_dim=16", "train.epochs=1", "eval.batch_size=100",
            f"results_dir={tmp_path / 'results'}", "tracking.wandb=disabled"]
    record = run_experiment(resolve(base))
    assert record["status"] == "ok" and record["steps"] == 8
    (warning,) = record["warnings"]
    assert "train.warmup_steps=20 >= the run's 8 optimiser steps" in warning
    assert f"warning: {warning}" in capsys.readouterr().err
    # a warm-up shorter than the run: no warning, no key (records of such runs are as before)
    record = run_experiment(resolve([*base, "train.warmup_steps=4"]))
    assert "warnings" not in record


# -- item 15: what the console and the folders say -------------------------------------------


def test_a_failed_sweep_child_gets_its_wall_time(tmp_path):
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\nsleep 0.3\nexit 3\n")
    fake.chmod(0o755)
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        import bench.sweep as sweep
        sys.executable = {str(fake)!r}
        record = sweep.run_isolated(["method=dense", "results_dir={tmp_path / 'results'}"], "g", Path({str(tmp_path)!r}))
        print(json.dumps({{"reason": record["reason"], "wall": record.get("wall_time_s", 0)}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()}).stdout
    import json

    got = json.loads(out.strip().splitlines()[-1])
    assert "exited with code 3" in got["reason"] and got["wall"] >= 0.3


def test_the_nan_line_names_the_step(tmp_path, tiny_overrides, capsys):
    code = main(["run", "method=dense", *tiny_overrides, "train.lr_classifier=1e30", "train.warmup_steps=0"])
    assert code == 1
    err = capsys.readouterr().err
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["reason"] == "nan" and record["failed_at_step"] >= 1
    assert f"failed: nan at step {record['failed_at_step']}" in err


def test_wandb_run_folders_land_in_results_wandb(tmp_path, tiny_overrides):
    from bench.experiment import run_experiment

    cfg = resolve(["method=dense", *[o for o in tiny_overrides if not o.startswith("tracking.")],
                   "tracking.wandb=offline"])
    record = run_experiment(cfg)
    wandb_dir = tmp_path / "results" / "wandb"
    assert not (wandb_dir / "wandb").exists()
    runs = [p.name for p in wandb_dir.iterdir() if p.name.startswith("offline-run-")]
    assert len(runs) == 1 and Path(record["wandb_dir"]).parent == wandb_dir


def test_output_piped_into_a_reader_that_stops_early_is_no_traceback():
    # `xmc-bench list | head -1`: the reader closes the pipe while the list is still printing
    proc = subprocess.run(f"{sys.executable} -m bench.cli list | head -1", shell=True, capture_output=True,
                          text=True, timeout=120)
    assert proc.stdout.startswith("classifiers:")
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr, proc.stderr


def test_an_empty_wandb_mode_variable_does_not_cost_the_wandb_run(tmp_path, tiny_overrides, monkeypatch):
    # WANDB_MODE= (set, empty) is rejected by wandb itself; tracking.wandb decides the mode instead
    monkeypatch.setenv("WANDB_MODE", "")
    overrides = [o for o in tiny_overrides if not o.startswith("tracking.wandb")] + ["tracking.wandb=offline"]
    assert main(["run", "method=dense", *overrides]) == 0
    (record,) = read_records(tmp_path / "results" / "runs.jsonl")
    assert record["tracking"]["wandb"] == "offline"
    assert list((tmp_path / "results" / "wandb").glob("offline-run-*"))
