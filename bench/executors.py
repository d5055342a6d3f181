"""Running a sweep beyond one local process pool: a Slurm job array through submitit, or a
W&B sweep whose agents pull configurations on any number of machines.

Either way each configuration runs through the normal path and writes its local record; the
records decide what has run (W&B grid sweeps do not reliably re-run crashed or deleted runs).
"""

from __future__ import annotations

from pathlib import Path

from bench.config import config_hash
from bench.resolve import resolve
from bench.errors import BenchError
from bench.record import check_writable, new_run_id
from bench.sweep import finished_hashes, unfinished


def run_in_job(overrides: list[str], group: str, sweep: str) -> dict:
    """Entry point of one array job (its own process, so its peak RSS is its own)."""
    from bench.experiment import run_experiment  # in the job: the submitting process needs no torch

    return run_experiment(resolve(overrides), group=group, sweep=sweep)


def submit_sweep(name: str, runs: list[list[str]], folder: str | Path, cluster: str | None = None,
                 parallelism: int = 8, timeout_min: int = 24 * 60, skip_finished: bool = True,
                 wait: bool = True) -> tuple[list, list[dict]]:
    """Submit ``runs`` as one job array (Slurm where ``srun`` exists, else local processes;
    ``cluster='local'`` forces local). Returns (jobs, records — empty unless ``wait``)."""
    try:
        import submitit
    except ImportError:
        raise BenchError("--executor submitit needs the submitit package: pip install submitit") from None
    configs = [resolve(o) for o in runs]
    for results_dir in dict.fromkeys(c.results_dir for c in configs):  # before any job is queued
        check_writable(results_dir)
    if skip_finished:
        runs = unfinished(runs, configs)
    if not runs:
        return [], []
    executor = submitit.AutoExecutor(folder=str(Path(folder) / "%j"), cluster=cluster)
    executor.update_parameters(name=f"xmc-{name}", timeout_min=timeout_min, slurm_array_parallelism=parallelism)
    group = f"{name}-{new_run_id()}"
    jobs = executor.map_array(run_in_job, runs, [group] * len(runs), [name] * len(runs))
    return jobs, ([job.result() for job in jobs] if wait else [])


def wandb_sweep_config(name: str, runs: list[list[str]], project: str) -> dict:
    """A W&B grid sweep over the index of our expanded configurations: zipped axes and every
    override survive as they are, and the agent resolves them exactly as a local sweep would."""
    return {
        "name": name,
        "project": project,
        "method": "grid",
        "metric": {"name": "P@1", "goal": "maximize"},
        "parameters": {
            "run_index": {"values": list(range(len(runs)))},
            "sweep_name": {"value": name},
            "configurations": {"value": runs},
        },
    }


def register_wandb_sweep(name: str, runs: list[list[str]], project: str) -> str:
    import wandb

    try:
        return wandb.sweep(wandb_sweep_config(name, runs, project), project=project)
    except Exception as err:  # noqa: BLE001 — no server, no login: say so plainly
        raise BenchError(f"could not register the sweep with W&B (it needs `wandb login` and a reachable "
                         f"server; local sweeps need neither): {err}") from None


def agent_step(sweep_config: dict, log_dir: Path) -> dict | None:
    """Run the configuration a W&B agent was handed, unless its local record says it already ran
    ``ok``. Returns the record (None when skipped)."""
    from bench.sweep import run_isolated

    overrides = list(sweep_config["configurations"][int(sweep_config["run_index"])])
    cfg = resolve(overrides)
    if config_hash(cfg) in finished_hashes(cfg.results_dir):
        return None
    name = sweep_config.get("sweep_name", "wandb")
    return run_isolated(overrides, group=f"{name}-agent", log_dir=log_dir, sweep=name)


def run_wandb_agent(sweep_id: str, count: int | None = None, log_dir: Path = Path("results/logs")) -> None:
    import wandb

    def step():
        run = wandb.init()
        record = agent_step(dict(run.config), log_dir)
        if record is not None:
            run.summary.update({k: v for k, v in (record.get("metrics") or {}).items()})
            run.summary["status"] = record.get("status")
        run.finish()

    wandb.agent(sweep_id, function=step, count=count)
