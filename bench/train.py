"""The training loop, top to bottom: optimisers, schedule, steps, evaluation.

Two optimisers: the encoder's (``train.optimizer_encoder``: AdamW, or Adam) and the
classifier's (``train.optimizer_classifier``: SGD with momentum, Adam or AdamW); both follow one
linear warm-up + cosine schedule. The intermediate layer (``model.intermediate``) joins the
encoder's by default and the aux meta-classifier the classifier's, each with a learning rate
and weight decay of its own if asked (``train.intermediate_joins``, ``train.lr_aux``, …); with
``train.no_decay`` biases and norm weights get no weight decay. The loss (``bench.losses``:
``train.loss``, ``train.loss_reduction``; the aux branch's ``aux.loss``) is the one the
classifier, RigL's scores and the accumulation of ``train.grad_accum`` batches per optimiser
step all use. The classifier produces the loss itself (``classifier.loss``) so a
label-chunked implementation never has to hand back ``[B, L]`` logits; evaluation asks it for
top-k directly (streamed over label chunks) and keeps only running metric sums.

Checkpoints (``bench.checkpoint``) are written at epoch ends and every ``checkpoint.every``
steps; a run given one's state continues exactly where it stopped: same weights, optimiser
and schedule state, rewirer generator, RNG states, and the same epoch permutation, with the
batches already done skipped.

``train.precision``: the forward passes and the loss run under torch autocast (bf16 or fp16; the
backward, the optimiser steps and rewiring outside it), fp16 with a GradScaler. Each evaluation
updates the best epoch by ``eval.select``; ``train.patience`` stops training after that many
evaluations without a gain of ``train.patience_metric``.
"""

from __future__ import annotations

import contextlib
import math
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from bench import losses
from bench.checkpoint import Checkpoints, rng_state, set_rng_state
from bench.config import RunConfig
from bench.data.loader import iterate_batches, num_batches
from bench.distributed import OneProcess
from bench.errors import ConfigError
from bench.measure import Stopwatch
from bench.metrics import RankingMetrics, drop_filtered

KS = (1, 3, 5)
_STEP_HOOKS: list[Callable[[int], None]] = []


def add_step_hook(hook: Callable[[int], None]) -> Callable[[], None]:
    """Call ``hook(step)`` after every optimiser step of every run in this process (``step``
    counts from 1), once that step's checkpoint, if it has one, is written: a tool or a test can
    act at an exact step, e.g. kill the process as a preempted job dies. Returns the function
    that removes the hook again."""
    _STEP_HOOKS.append(hook)
    return lambda: _STEP_HOOKS.remove(hook)


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or Inf at optimiser step ``step``."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


@dataclass
class TrainResult:
    metrics: dict = field(default_factory=dict)  # final test metrics
    epochs: list = field(default_factory=list)  # per-epoch: epoch, step, train_loss, metrics
    steps: int = 0
    train_samples: int = 0
    train_seconds: float = 0.0
    eval_samples: int = 0
    eval_seconds: float = 0.0
    final_loss: float = float("nan")
    rewires: list = field(default_factory=list)  # one entry per DST rewire (step, fraction, changed, ...)
    aux_steps: int = 0  # steps that computed the auxiliary branch (α > 0)
    aux_seconds: float = 0.0  # time in the aux branch's forward and loss (its backward is in the shared backward)
    grad_norm_steps: list = field(default_factory=list)  # steps of the encoder gradient-norm series (every log_every)
    grad_norms: list = field(default_factory=list)  # encoder gradient norm at those steps
    best: dict | None = None  # the evaluated epoch best on eval.select: epoch, step, metric, value, metrics
    stopped_early: int | None = None  # the epoch after which train.patience stopped training
    step_seconds: list = field(default_factory=list)  # timed seconds of each step (the steady-state step time)


@dataclass
class Progress:
    """Where training stands inside an epoch, as a checkpoint records it."""

    epoch: int = 1  # the epoch under way (1-based)
    batch: int = 0  # its batches done
    shuffle_state: dict | None = None  # the shuffle generator at the epoch's start: its permutation is redrawn from it
    loss_sum: float = 0.0  # the epoch's summed main loss …
    loss_count: int = 0  # … over this many steps
    grad_norms: list = field(default_factory=list)  # the epoch's encoder gradient norms, one per step


def training_state(model, optimizers, schedulers, rewirer, progress: Progress, result: TrainResult,
                   scaler=None) -> dict:
    """Everything a resumed run needs to continue as the uninterrupted one would. The sparse
    connectivity (indices, masks) is in the model's buffers; ``scaler``: fp16's GradScaler."""
    state = {"model": model.state_dict(), "optimizers": [o.state_dict() for o in optimizers],
             "schedulers": [s.state_dict() for s in schedulers],
             "rewirer": rewirer.state_dict() if rewirer is not None else None,
             "rng": rng_state(), "progress": asdict(progress), "result": asdict(result)}
    if scaler is not None:
        state["scaler"] = scaler.state_dict()
    return state


def restore_training_state(state: dict, model, optimizers, schedulers, rewirer,
                           scaler=None) -> tuple[Progress, TrainResult]:
    model.load_state_dict(state["model"])
    for part, saved in zip([*optimizers, *schedulers], [*state["optimizers"], *state["schedulers"]]):
        part.load_state_dict(saved)
    if rewirer is not None:
        rewirer.load_state_dict(state["rewirer"])
    if scaler is not None and "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    return Progress(**state["progress"]), TrainResult(**state["result"])


OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


def decay_groups(module, lr: float, weight_decay: float, exempt: bool) -> list[dict]:
    """``module``'s parameters as optimiser groups; with ``exempt``, its biases and norm weights
    (every parameter of fewer than two dimensions) in a group without weight decay."""
    params = list(module.parameters())
    if not exempt:
        return [{"params": params, "lr": lr, "weight_decay": weight_decay}]
    return [{"params": [p for p in params if p.dim() >= 2], "lr": lr, "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "lr": lr, "weight_decay": 0.0}]


def merge_groups(groups: list[dict]) -> list[dict]:
    """Groups of equal settings as one, in first-seen order, empty ones dropped: when nothing
    differs, one group holding every parameter, as an optimiser built on a plain list has."""
    merged: dict[tuple, dict] = {}
    for group in groups:
        if group["params"]:
            key = (group["lr"], group["weight_decay"])
            merged.setdefault(key, {**group, "params": []})["params"] += group["params"]
    return list(merged.values())


def make_optimizers(model, cfg: RunConfig) -> list[torch.optim.Optimizer]:
    """``[encoder's optimiser, classifier's optimiser]``. Each part of ``model.parts()`` joins
    one (the intermediate layer and the aux branch as ``train.*_joins`` say) with that
    optimiser's learning rate and weight decay, or its own (``train.lr_intermediate``, …; -1:
    the optimiser's)."""
    t = cfg.train
    settings = {"encoder": (t.lr_encoder, t.weight_decay_encoder),
                "classifier": (t.lr_classifier, t.weight_decay_classifier)}
    own = {"intermediate": (t.intermediate_joins, t.lr_intermediate, t.weight_decay_intermediate),
           "aux": (t.aux_joins, t.lr_aux, t.weight_decay_aux)}
    exempt = {"encoder": t.no_decay != "none", "classifier": t.no_decay == "all"}
    groups: dict[str, list[dict]] = {"encoder": [], "classifier": []}
    # the optimiser's own part first: its first group is the one the log's learning rate reads
    for name, part in sorted(model.parts().items(), key=lambda item: item[0] in own):
        joins, lr, weight_decay = own.get(name, (name, -1.0, -1.0))
        lr = settings[joins][0] if lr < 0 else lr
        weight_decay = settings[joins][1] if weight_decay < 0 else weight_decay
        groups[joins] += decay_groups(part, lr, weight_decay, exempt[joins])
    encoder = OPTIMIZERS[t.optimizer_encoder](merge_groups(groups["encoder"]), lr=t.lr_encoder)
    extra = {"momentum": t.momentum} if t.optimizer_classifier == "sgd" else {}
    classifier = OPTIMIZERS[t.optimizer_classifier](merge_groups(groups["classifier"]), lr=t.lr_classifier, **extra)
    return [encoder, classifier]


def optimizer_slots(cfg: RunConfig) -> dict[str, int]:
    """Optimiser buffers per parameter of each part, for the analytic memory: Adam and AdamW
    keep 2 (first and second moments), SGD 1 (momentum; 0 with ``train.momentum=0``)."""
    t = cfg.train
    per = {"encoder": 2, "classifier": 2 if t.optimizer_classifier != "sgd" else int(t.momentum > 0)}
    return per | {"intermediate": per[t.intermediate_joins], "aux": per[t.aux_joins]}


def warmup_cosine(total_steps: int, warmup_steps: int):
    """LR multiplier: linear warm-up to 1, then cosine decay to 0 at ``total_steps``."""
    warmup_steps = min(warmup_steps, max(total_steps - 1, 0))

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return factor


def aux_weight(step: int, steps_total: int, scale: float, cutoff: float, schedule: str = "cosine") -> float:
    """α of optimiser step ``step`` (0-based): ``scale`` at 0, decaying to 0 at ``cutoff``·steps
    (cosine, the paper's; linear; or constant until the cutoff), 0 from then on."""
    end = cutoff * steps_total
    if scale <= 0 or step >= end:
        return 0.0
    progress = step / end
    if schedule == "cosine":
        return scale * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "linear":
        return scale * (1.0 - progress)
    return scale


def aux_cutoff_fraction(aux, steps_total: int, steps_per_epoch: int) -> float:
    """``aux.cutoff`` as a fraction of all training steps (it may be given in epochs)."""
    if aux.cutoff_unit == "epochs":
        return aux.cutoff * steps_per_epoch / max(1, steps_total)
    return aux.cutoff


AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device):
    """The context the forward passes and the loss run in: nothing for ``fp32``, else torch
    autocast to bfloat16 / float16 on ``device`` (torch's CPU autocast takes both)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision not in AUTOCAST_DTYPES:
        raise ConfigError(f"config key 'train.precision' must be one of fp32, bf16, fp16, got {precision!r}")
    return torch.autocast(device.type, dtype=AUTOCAST_DTYPES[precision])


def make_scaler(precision: str, device: torch.device):
    """fp16's loss scaler (float16 gradients underflow without it), or None: fp32 and bf16
    (bfloat16 has float32's exponent range) need none."""
    if precision != "fp16":
        return None
    return torch.amp.GradScaler(device.type)


def step_optimizers(optimizers, scaler=None) -> None:
    """Every optimiser's step; with fp16's ``scaler`` the gradients are unscaled first (so the
    recorded gradient norms are the true ones) and a step whose gradients overflowed is skipped."""
    if scaler is None:
        for opt in optimizers:
            opt.step()
        return
    for opt in optimizers:
        scaler.unscale_(opt)
    for opt in optimizers:
        scaler.step(opt)
    scaler.update()


def select_best(epochs: list, metric: str) -> dict | None:
    """The evaluated epoch with the highest ``metric`` (the earliest among equals): its epoch,
    step, ``metric``, ``value`` and all its ``metrics``; None when no epoch was evaluated."""
    best = None
    for entry in epochs:
        value = (entry.get("metrics") or {}).get(metric)
        if value is not None and (best is None or value > best["value"]):
            best = {"epoch": entry["epoch"], "step": entry["step"], "metric": metric, "value": value,
                    "metrics": entry["metrics"]}
    return best


def evaluations_without_improvement(epochs: list, metric: str) -> int:
    """How many evaluations since ``metric`` last improved on every earlier one (early stopping's
    count; read from the history, so a resumed run counts on as the uninterrupted one)."""
    best, since = None, 0
    for entry in epochs:
        value = (entry.get("metrics") or {}).get(metric)
        if value is None:
            continue
        if best is None or value > best:
            best, since = value, 0
        else:
            since += 1
    return since


@torch.no_grad()
def grad_norm(module) -> float:
    """L2 norm of all of ``module``'s parameter gradients together (0 when none has one)."""
    norms = [p.grad.norm().float() for p in module.parameters() if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(norms)).item() if norms else 0.0


def steps_per_epoch(cfg: RunConfig, num_train: int) -> int:
    """Optimiser steps per epoch: one per ``train.grad_accum`` batches (the epoch's last step
    takes the batches left)."""
    return -(-num_batches(num_train, cfg.train.batch_size, drop_last=False) // cfg.train.grad_accum)


def accumulation_rows(cfg: RunConfig, num_train: int, index: int) -> tuple[int, int]:
    """``(rows of the epoch's batch index, rows of every batch of its optimiser step)``: what a
    batch's loss is weighted by when ``train.grad_accum`` batches make one step (global rows
    under torchrun)."""
    size, n = cfg.train.batch_size, cfg.train.grad_accum
    first = index // n * n
    return min(size, num_train - index * size), min((first + n) * size, num_train) - first * size


def total_steps(cfg: RunConfig, num_train: int) -> tuple[int, int]:
    """(optimiser steps, epochs) the run will take: ``max_steps`` caps ``epochs`` when both are set."""
    per_epoch = steps_per_epoch(cfg, num_train)
    if cfg.train.max_steps and (not cfg.train.epochs or cfg.train.max_steps < cfg.train.epochs * per_epoch):
        return cfg.train.max_steps, math.ceil(cfg.train.max_steps / per_epoch)
    return cfg.train.epochs * per_epoch, cfg.train.epochs


def schedule_warnings(cfg: RunConfig, num_train: int) -> list[str]:
    """What makes a run's schedule unable to learn, said before it trains: a warm-up as long as
    the run or longer keeps the learning rate ramping up for the whole run (``warmup_cosine``
    cuts it to one step short of the end), so every method scores about the same."""
    steps, _ = total_steps(cfg, num_train)
    if cfg.train.warmup_steps >= steps:
        return [f"train.warmup_steps={cfg.train.warmup_steps} >= the run's {steps} optimiser steps "
                f"({num_train} training points, train.batch_size={cfg.train.batch_size}, "
                f"train.epochs={cfg.train.epochs}, train.max_steps={cfg.train.max_steps}): the whole run is "
                "learning-rate warm-up; train longer or lower train.warmup_steps"]
    return []


@torch.no_grad()
def evaluate(model, x, y, cfg: RunConfig, inv_propensity: np.ndarray, device,
             filtered=None, texts=None, parallel=None) -> tuple[dict, int, float]:
    """Streaming evaluation: per test batch only the top-k ids are kept. Returns
    (metrics, samples, seconds). ``filtered`` (CSR like ``y``) lists (point, label) pairs to
    drop from the predictions before top-k (the XC label filters). With ``parallel`` every
    rank scores the same batches on its label shard and the shards' top-k are merged."""
    runner = parallel or OneProcess()
    model.eval()
    ks = tuple(k for k in KS if k <= cfg.eval.max_k) or (cfg.eval.max_k,)
    metrics = RankingMetrics(y.num_cols, ks=ks, inv_propensity=inv_propensity)
    watch = Stopwatch(device)
    for batch in iterate_batches(x, y, cfg.eval.batch_size, shuffle=False, texts=texts):
        with watch, autocast(cfg.train.precision, device):
            batch = batch.to(device)
            extra = 0 if filtered is None else int(filtered.take_rows(batch.rows).row_lengths().max(initial=0))
            _, top_ids = runner.topk(model.features(batch), model.classifier, min(max(ks) + extra, y.num_cols))
            top_ids = top_ids.cpu().numpy()
        if filtered is not None:
            top_ids = drop_filtered(top_ids, filtered.take_rows(batch.rows), max(ks))
        metrics.update(top_ids, y.take_rows(batch.rows))
    model.train()
    return metrics.compute(), x.num_rows, watch.seconds


def make_rewirer(model, cfg: RunConfig, steps_total: int, classifier_optimizer, seed: int,
                 loss: losses.Loss | None = None):
    """The DST rewirer for sparse classifiers, or None for static connectivity; RigL scores
    with ``loss``, the loss training uses."""
    if cfg.dst.regrow == "none":
        return None
    from bench.dst import Rewirer

    try:
        return Rewirer(model.classifier, cfg.dst, steps_total, classifier_optimizer, seed=seed, loss=loss)
    except TypeError as err:
        raise ConfigError(f"dst.regrow={cfg.dst.regrow} needs a sparse classifier, "
                          f"but model.classifier={cfg.model.classifier}: {err}") from None


def train(model, dataset, cfg: RunConfig, device, tracker, inv_propensity: np.ndarray,
          checkpoints: Checkpoints | None = None, resume: dict | None = None, parallel=None) -> TrainResult:
    """Train ``model``; with ``checkpoints``, write them as ``cfg.checkpoint`` says; with
    ``resume`` (a checkpoint's state), continue from it. With ``parallel``
    (``bench.distributed.Parallel``, under torchrun) the classifier is this rank's label shard,
    each rank encodes its share of every global batch, and the collective steps replace the
    single-process ones (see ``bench.distributed``)."""
    runner = parallel or OneProcess()
    steps_total, epochs = total_steps(cfg, dataset.num_train)
    per_epoch, batches = steps_per_epoch(cfg, dataset.num_train), num_batches(dataset.num_train, cfg.train.batch_size)
    accum = cfg.train.grad_accum
    optimizers = make_optimizers(model, cfg)
    criterion = losses.create(cfg.train.loss, cfg.train.loss_reduction)  # the classifier's, and RigL's
    aux_criterion = losses.create(cfg.aux.loss, cfg.aux.loss_reduction)
    rewirer = make_rewirer(model, cfg, steps_total, optimizers[1], seed=runner.seed(cfg.seed),
                           loss=runner.criterion(criterion))
    scaler = make_scaler(cfg.train.precision, device)
    schedule = warmup_cosine(steps_total, cfg.train.warmup_steps)
    aux_cutoff = aux_cutoff_fraction(cfg.aux, steps_total, per_epoch)
    schedulers = [torch.optim.lr_scheduler.LambdaLR(opt, schedule) for opt in optimizers]
    shuffle_rng = np.random.default_rng(cfg.seed)
    result, progress = TrainResult(), Progress()
    carry = [0.0, 0.0, 0.0]  # main, total and aux loss of the batches of the step under way (grad_accum)
    watch, aux_watch = Stopwatch(device), Stopwatch(device)
    if resume is not None:
        progress, result = restore_training_state(resume, model, optimizers, schedulers, rewirer, scaler)
        resume.clear()  # the loaded copy is not kept for the whole run
        watch.seconds, aux_watch.seconds = result.train_seconds, result.aux_seconds

    def save_checkpoint():
        # a state whose weights already overflowed is no good one to return to (its next loss is NaN)
        if checkpoints is None or not all(torch.isfinite(p).all() for p in model.parameters()):
            return
        result.train_seconds, result.aux_seconds = watch.seconds, aux_watch.seconds
        checkpoints.save(training_state(model, optimizers, schedulers, rewirer, progress, result, scaler),
                         result.steps)

    bar = tqdm(total=steps_total, initial=result.steps, desc=cfg.method or cfg.model.classifier, unit="step",
               disable=not sys.stderr.isatty(), leave=False)
    model.train()
    for epoch in range(progress.epoch, epochs + 1):
        if progress.epoch != epoch:
            progress = Progress(epoch)
        if progress.shuffle_state is None:  # a fresh epoch: remember the state its permutation comes from
            progress.shuffle_state = shuffle_rng.bit_generator.state
        else:  # resumed: redraw the same permutation, then skip the batches already done
            shuffle_rng.bit_generator.state = progress.shuffle_state
        for batch in iterate_batches(dataset.train_x, dataset.train_y, cfg.train.batch_size, shuffle=True,
                                     generator=shuffle_rng, texts=dataset.train_text, start=progress.batch,
                                     local_rows=runner.local_rows):
            # train.grad_accum batches make one optimiser step: the first zeroes the gradients, the last steps
            first = progress.batch % accum == 0
            step_done = (progress.batch + 1) % accum == 0 or progress.batch + 1 == batches
            if first:
                step_timed_from = watch.seconds  # a step's time covers all its batches
            with watch, contextlib.ExitStack() as amp:
                batch = batch.to(device)
                amp.enter_context(autocast(cfg.train.precision, device))  # the forward and loss only
                z = model.encoder(batch)  # [B, d]
                h = model.head_input(z)  # [B, d], or [B, m] after an intermediate layer
                # under torchrun: this shard's labels on the whole global batch
                loss = runner.loss(h, model.classifier, batch.targets, fused=cfg.train.fused_loss, criterion=criterion)
                alpha = 0.0 if model.aux is None else aux_weight(
                    result.steps, steps_total, cfg.aux.scale, aux_cutoff, cfg.aux.schedule)
                if accum > 1:  # the batch's share of its step's loss, which is that of all the step's points
                    rows, step_rows = accumulation_rows(cfg, dataset.num_train, progress.batch)
                    loss = loss * criterion.share(rows, step_rows, dataset.num_labels)
                main_loss = loss
                if alpha > 0:  # after the cutoff the branch costs nothing
                    with aux_watch:
                        clusters = model.aux.num_clusters
                        aux_loss = runner.local_share(model.aux.loss(z, batch.targets, aux_criterion), aux_criterion,
                                                      clusters)
                        if accum > 1:
                            aux_loss = aux_loss * aux_criterion.share(rows, step_rows, clusters)
                    loss = (1.0 - alpha) * main_loss + alpha * aux_loss
                    result.aux_steps += int(step_done)
                amp.close()  # autocast ends: backward, steps and rewiring run outside it
                if first:
                    for opt in optimizers:
                        opt.zero_grad(set_to_none=True)
                (loss if scaler is None else scaler.scale(loss)).backward()
                if step_done:
                    runner.sum_grads(model.encoder, model.intermediate, model.aux)  # the data-parallel parts
                    step_optimizers(optimizers, scaler)
                    for sched in schedulers:
                        sched.step()
                    # rewiring is part of training cost, so it runs inside the timed section
                    rewire = None
                    if rewirer is not None and rewirer.schedule.due(result.steps + 1):
                        rewire = rewirer.rewire(result.steps + 1, *runner.rewire_inputs(h.detach(), batch.targets))
            result.train_samples += runner.batch_size(batch)
            progress.batch += 1
            if step_done:
                result.step_seconds.append(watch.seconds - step_timed_from)
            # main: the task's loss, comparable across methods; under torchrun both summed over
            # the ranks' shares, so every rank sees the global values
            value, total = runner.sum_value(main_loss).item(), runner.sum_value(loss).item()
            if accum > 1:  # a step's losses are the sums of its batches' shares
                carry = [a + b for a, b in zip(carry, (value, total, aux_loss.item() if alpha > 0 else 0.0))]
                if not step_done:
                    continue
                (value, total, aux_value), carry = carry, [0.0, 0.0, 0.0]
            # gradient flow into the encoder (the gradients stay until the next step's zero_grad;
            # measured outside the timed section so it costs no throughput)
            encoder_norm = grad_norm(model.encoder)
            if not math.isfinite(total):  # raised before any checkpoint of this step is written
                raise NonFiniteLoss(f"training loss became {total} at step {result.steps + 1}", result.steps + 1)
            result.steps += 1
            progress.loss_sum, progress.loss_count = progress.loss_sum + value, progress.loss_count + 1
            progress.grad_norms.append(encoder_norm)
            if rewire:
                result.rewires.append(rewire)
                tracker.log({f"dst/{k}": v for k, v in rewire.items() if v is not None and k != "step"},
                            step=result.steps)
            bar.update(1)
            tracker.log({"train/encoder_grad_norm": encoder_norm}, step=result.steps)
            if result.steps % cfg.train.log_every == 0:
                result.grad_norm_steps.append(result.steps)
                result.grad_norms.append(encoder_norm)
            # W&B also gets the first and the last step: a run shorter than log_every still has a loss curve
            if result.steps % cfg.train.log_every == 0 or result.steps in (1, steps_total):
                bar.set_postfix(loss=f"{value:.4f}")
                extra = {"train/aux_loss": aux_value if accum > 1 else aux_loss.item(),
                         "train/aux_weight": alpha} if alpha > 0 else {}
                tracker.log({"train/loss": value, "train/lr_classifier": schedulers[1].get_last_lr()[0],
                             "epoch": epoch} | extra, step=result.steps)
            # the epoch's last step is checkpointed at the epoch's end, after its evaluation
            if cfg.checkpoint.every and result.steps % cfg.checkpoint.every == 0 \
                    and progress.batch < batches and result.steps < steps_total:
                save_checkpoint()
            for hook in _STEP_HOOKS:
                hook(result.steps)
            if result.steps >= steps_total:
                break
        result.final_loss = progress.loss_sum / max(progress.loss_count, 1)
        last = epoch == epochs or result.steps >= steps_total
        norms = progress.grad_norms
        entry = {"epoch": epoch, "step": result.steps, "train_loss": result.final_loss,
                 "encoder_grad_norm": {"mean": float(np.mean(norms)), "min": min(norms),
                                       "max": max(norms), "last": norms[-1]}}
        if cfg.eval.every_epoch or last:
            metrics, samples, seconds = evaluate(model, dataset.test_x, dataset.test_y, cfg, inv_propensity, device,
                                                 filtered=dataset.test_filter, texts=dataset.test_text,
                                                 parallel=parallel)
            entry["metrics"] = metrics
            result.metrics, result.eval_samples, result.eval_seconds = metrics, samples, seconds
            tracker.log({f"test/{k}": v for k, v in metrics.items()} | {"epoch": epoch}, step=result.steps)
        result.epochs.append(entry)
        result.best = select_best(result.epochs, cfg.eval.select)
        patience_metric = cfg.train.patience_metric or cfg.eval.select
        if not last and "metrics" in entry and cfg.train.patience \
                and evaluations_without_improvement(result.epochs, patience_metric) >= cfg.train.patience:
            result.stopped_early, last = epoch, True
        summary = " ".join(f"{k}={v:.4f}" for k, v in entry.get("metrics", {}).items() if k.startswith("P@"))
        if runner.is_main:
            print(f"  epoch {epoch}/{epochs} step {result.steps} loss {result.final_loss:.4f} {summary}"
                  + (f" (early stop: no {patience_metric} gain in {cfg.train.patience} evaluations)"
                     if result.stopped_early else ""), file=sys.stderr, flush=True)
        if last:  # no checkpoint: the record follows at once
            break
        progress = Progress(epoch + 1, shuffle_state=shuffle_rng.bit_generator.state)
        save_checkpoint()
    bar.close()
    result.train_seconds = watch.seconds
    result.aux_seconds = aux_watch.seconds
    return result
