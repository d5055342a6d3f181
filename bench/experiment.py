"""One configuration, start to finish: data → model → train → measure → record.

Whatever happens once it starts, a record is written (``bench.record``): ``status=ok`` with
metrics, or ``status=failed`` with the reason (``nan`` for a non-finite loss, ``oom`` for out of
memory, else the error). A results directory the record could not be written to stops the run
before anything is loaded or trained, and so does another process running the same
configuration now (``bench.checkpoint.RunLock``: ``RunningElsewhere``, and no record).

With ``checkpoint.enabled``, a configuration that has checkpoints (an earlier attempt was killed
or failed) continues from its newest loadable one (``checkpoint.resume=auto``) and its record
says so (``resumed_from``); a failed run keeps its checkpoints and names the newest
(``checkpoint``); an ok run deletes them.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from bench.checkpoint import Checkpoints, RunLock
from bench.config import RunConfig, to_dict
from bench.data.catalog import load_dataset
from bench.data.propensity import jain_propensity
from bench.distributed import SHARD_INIT_ENV, Parallel, init_from_env, keep_label_rows, label_shard
from bench.measure import PeakMemory, environment, machine_speed, steady_throughput
from bench.models.xmc import build_classifier, build_model, init_bias_to_prior
from bench.record import (check_writable, mark_failed, mark_finished, mark_ok, new_record, new_run_id, records_path,
                          utc_time)
from bench.tracking import Tracker
from bench.train import NonFiniteLoss, optimizer_slots, schedule_warnings, train


def pick_device(name: str, local_rank: int | None = None) -> torch.device:
    """The run's device; under torchrun each rank takes GPU ``LOCAL_RANK``."""
    if name in ("auto", "cuda") and torch.cuda.is_available() and local_rank is not None:
        index = int(os.environ.get("LOCAL_RANK", local_rank))
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        from bench.errors import ConfigError

        raise ConfigError("config key 'train.device' is 'cuda' but no CUDA device is available")
    return torch.device(name)


def build_model_for(cfg: RunConfig, dataset, positive_fraction: float, parallel=None):
    """The model; under torchrun with this rank's label shard as its classifier, initialised
    from a seed of the rank's own (or cut from the full layer with ``XMC_SHARD_INIT=full``)."""
    counts = dataset.train_y.column_counts()
    if parallel is None:
        return build_model(cfg.model, dataset.num_features, dataset.num_labels, cfg.seed, positive_fraction,
                           label_counts=counts)
    shard = parallel.shard
    if os.environ.get(SHARD_INIT_ENV) == "full":
        model = build_model(cfg.model, dataset.num_features, dataset.num_labels, cfg.seed, positive_fraction,
                            label_counts=counts)
        part = build_classifier(cfg.model, shard.num_labels, cfg.seed, in_features=model.classifier.in_features,
                                label_counts=counts[shard.lo : shard.hi])
        model.classifier = keep_label_rows(model.classifier, part, shard)
        return model
    return build_model(cfg.model, dataset.num_features, shard.num_labels, parallel.seed(cfg.seed), positive_fraction,
                       label_counts=counts[shard.lo : shard.hi])


def build_aux(cfg: RunConfig, dataset, model, device):
    """The meta-classifier and what the record says about it (clusters, their build time)."""
    from bench.data.clusters import default_num_clusters, label_clusters, read_cluster_file
    from bench.models.meta import MetaClassifier

    t0 = time.perf_counter()
    if cfg.aux.clusters_file:  # the reference's clusters, as given
        clusters, cached = read_cluster_file(cfg.aux.clusters_file, dataset.num_labels), False
        num_clusters = int(clusters.max()) + 1
        if cfg.aux.num_clusters and cfg.aux.num_clusters != num_clusters:
            from bench.errors import ConfigError

            raise ConfigError(f"config key 'aux.num_clusters' is {cfg.aux.num_clusters} but aux.clusters_file "
                              f"{cfg.aux.clusters_file} holds {num_clusters} clusters: set 0 or {num_clusters}")
    else:
        num_clusters = cfg.aux.num_clusters or default_num_clusters(dataset.num_labels)
        features = None
        if cfg.aux.centroids == "encoder":
            source = {"model": to_dict(cfg.model), "seed": cfg.seed}  # the encoder as initialised
            features = (encoder_features(model, dataset, cfg, device), source)
        clusters, cached = label_clusters(dataset, cfg.data, num_clusters, cfg.aux.cluster_dim, cfg.aux.cluster_iters,
                                          use_cache=cfg.aux.cache, features=features)
    sizes = np.bincount(clusters, minlength=num_clusters)
    info = {"num_clusters": num_clusters, "cluster_size_min": int(sizes.min()), "cluster_size_max": int(sizes.max()),
            "centroids": "file" if cfg.aux.clusters_file else cfg.aux.centroids, "clusters_from_cache": cached,
            "cluster_seconds": time.perf_counter() - t0}
    if cfg.aux.clusters_file:
        info["clusters_file"] = cfg.aux.clusters_file
    meta = MetaClassifier(model.encoder.out_features, clusters, num_clusters)
    if cfg.model.bias_init == "prior":
        init_bias_to_prior(meta.linear, meta.cluster_positive_fraction(dataset.train_y))
    return meta, info


def cluster_groups(cfg: RunConfig, dataset):
    """The dataset with its labels renumbered cluster by cluster, so that ``ffi-group``'s groups of
    ``model.group_size`` contiguous ids are label clusters; and what the record says about it."""
    from bench.data.clusters import cluster_label_order

    t0 = time.perf_counter()
    new_id, how, cached = cluster_label_order(dataset, cfg.data, cfg.model.group_size, cfg.aux.cluster_dim,
                                              cfg.aux.cluster_iters, use_cache=cfg.aux.cache)
    return dataset.relabel(new_id, how), {**how, "clusters_from_cache": cached, "seconds": time.perf_counter() - t0}


@torch.no_grad()
def encoder_features(model, dataset, cfg: RunConfig, device) -> torch.Tensor:
    """``[N, d]`` encoder output of every training point (eval mode: no dropout, no RNG used)."""
    from bench.data.loader import iterate_batches

    model.eval()
    parts = [model.encoder(batch.to(device)).float().cpu()
             for batch in iterate_batches(dataset.train_x, dataset.train_y, cfg.eval.batch_size, shuffle=False,
                                          texts=dataset.train_text)]
    model.train()
    return torch.cat(parts)


def failure_reason(err: BaseException) -> str:
    if isinstance(err, NonFiniteLoss):
        return "nan"
    if isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower():
        return "oom"
    return f"{type(err).__name__}: {err}"


def propensity_parameters(cfg: RunConfig, dataset_name: str) -> dict:
    """Jain et al. A and B: the config's where set (non-zero), else the dataset card's (Amazon
    0.6/2.6, Wikipedia 0.5/0.4, …), else the general 0.55/1.5."""
    from bench.data.cards import load_card

    card = (load_card(dataset_name) or {}).get("propensity") or {}
    a = cfg.eval.propensity_a or card.get("A") or 0.55
    b = cfg.eval.propensity_b or card.get("B") or 1.5
    source = "config" if cfg.eval.propensity_a and cfg.eval.propensity_b else ("card" if card else "default")
    return {"A": float(a), "B": float(b), "source": source}


def run_experiment(cfg: RunConfig, run_id: str | None = None, group: str = "", sweep: str = "") -> dict:
    """Run ``cfg`` and return its record; ``group`` and ``sweep`` label the record (one
    invocation of a sweep, and the sweep's name)."""
    run_id = run_id or new_run_id()
    group = group or cfg.tracking.group
    started = time.time()
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    torch.manual_seed(cfg.seed)
    rank, world = init_from_env()  # (0, 1) unless started by torchrun
    lock = None
    if rank == 0:  # before anything is trained: the record must have somewhere to go
        check_writable(cfg.results_dir)
        # and no other process may be running this configuration (RunningElsewhere, no record)
        lock = RunLock.of(cfg).acquire()
    try:
        return _run(cfg, run_id, group, sweep, started, rank, world)
    finally:
        if lock is not None:
            lock.release()


def _run(cfg: RunConfig, run_id: str, group: str, sweep: str, started: float, rank: int, world: int) -> dict:
    device = pick_device(cfg.train.device, rank if world > 1 else None)
    # the machine's speed now and at the end (before the memory measurement starts, after it stops):
    # reports compare throughputs only between runs that saw a similar machine
    probe = {"start": machine_speed(device)}
    peak = PeakMemory(device)
    peak.start()
    results_dir = Path(cfg.results_dir)
    tracker = Tracker(  # under torchrun rank 0 alone records the run and mirrors it to W&B
        records_path(results_dir) if rank == 0 else None, cfg.tracking.wandb if rank == 0 else "disabled",
        cfg.tracking.wandb_dir or results_dir / "wandb",
        cfg.tracking.project, run_id, to_dict(cfg), group=group, start=False,  # started once a resume is known
        # data.num_labels sizes synthetic data only; real datasets are named instead
        name=(f"{cfg.method or cfg.model.classifier}-"
              + (f"L{cfg.data.num_labels}" if cfg.data.name.startswith("synthetic") else cfg.data.name)
              + f"-s{cfg.seed}"),
    )
    record = new_record(cfg, run_id, group, sweep, started_at=utc_time(started), environment=environment(device),
                        probe=probe)
    try:
        dataset = load_dataset(cfg.data)
        if cfg.model.group_order == "cluster":
            dataset, record["label_order"] = cluster_groups(cfg, dataset)
        record["dataset"] = {"name": dataset.name, **dataset.stats()}
        record["num_labels"] = dataset.num_labels
        if dataset.num_features == 0 and cfg.model.encoder == "bow":
            from bench.errors import ConfigError

            raise ConfigError(f"dataset {dataset.name!r} has no bag-of-words features (a text dataset, format text): "
                              "it needs model.encoder=transformer (and model.encoder_path)")
        positive_fraction = dataset.train_y.nnz / max(1, dataset.num_train * dataset.num_labels)
        parallel = None
        if world > 1:  # this rank's classifier holds its label shard only
            parallel = Parallel(label_shard(dataset.num_labels, rank, world))
            record["distributed"] = {"world": world, "backend": dist.get_backend(),
                                     "label_shards": [[shard.lo, shard.hi] for shard in
                                                      (label_shard(dataset.num_labels, r, world) for r in range(world))],
                                     "shard_init": os.environ.get(SHARD_INIT_ENV) or "own",
                                     "memory": "rank 0's process and classifier shard"}
        model = build_model_for(cfg, dataset, positive_fraction, parallel)
        for warning in schedule_warnings(cfg, dataset.num_train):  # said now, kept in the record
            record.setdefault("warnings", []).append(warning)
            if rank == 0:
                print(f"warning: {warning}", file=sys.stderr, flush=True)
        model = model.to(device)
        if cfg.aux.scale > 0:
            aux, record["aux"] = build_aux(cfg, dataset, model, device)
            model.aux = aux.to(device)
        record["propensity"] = propensity_parameters(cfg, cfg.data.name)  # the name or card file
        inv_propensity = 1.0 / jain_propensity(dataset.train_y.column_counts(), dataset.num_train,
                                               record["propensity"]["A"], record["propensity"]["B"])
        # checkpoints hold one process's state; a torchrun run is not checkpointed
        checkpoints = Checkpoints.of(cfg) if cfg.checkpoint.enabled and parallel is None else None
        resume = None
        if checkpoints is not None and cfg.checkpoint.resume == "never":
            checkpoints.remove()  # starting afresh: an older attempt's files must not mix with ours
        elif checkpoints is not None and (resume := checkpoints.load_latest()) is not None:
            record["resumed_from"] = {"step": resume.state["step"], "path": str(resume.path)}
        # a resumed run continues its W&B run (the id its checkpoints carry), and passes the id on
        tracker.start(resume.state.get("wandb_id") if resume is not None else None)
        if checkpoints is not None:
            checkpoints.wandb_id = tracker.wandb_id
        result = train(model, dataset, cfg, device, tracker, inv_propensity, checkpoints,
                       resume.state if resume is not None else None, parallel)
        slots = optimizer_slots(cfg)
        mark_ok(record, result, cfg.train.log_every, memory={
            **peak.stop(),
            # analytic bytes, each part with its optimiser's state (SGD momentum: 1 slot, Adam: 2)
            "classifier": model.classifier.memory_bytes(optimizer_slots=slots["classifier"]),
            "encoder": model.encoder.memory_bytes(optimizer_slots=slots["encoder"]),
            **model.part_memory_bytes(slots),  # intermediate layer, aux branch
        })
        record["throughput"].update(steady_throughput(result.step_seconds))
        probe["end"] = machine_speed(device)
    except Exception as err:  # noqa: BLE001 — a failed run is a record too
        error, memory = traceback.format_exc(limit=20), peak.stop()
        latest = Checkpoints.of(cfg).latest() if cfg.checkpoint.enabled else None
        # a kept checkpoint is the last good state, for a rerun to resume from
        mark_failed(record, failure_reason(err), error=error, memory=memory,
                    **({"checkpoint": str(latest)} if latest is not None else {}),
                    **({"failed_at_step": err.step} if isinstance(err, NonFiniteLoss) and err.step else {}))
    mark_finished(record, started)
    tracker.finish(record)
    if record["status"] == "ok" and cfg.checkpoint.enabled and world == 1:  # a later run starts afresh
        Checkpoints.of(cfg).remove()
    if world > 1:
        dist.destroy_process_group()
    return record
