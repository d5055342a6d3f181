"""Prune and regrow, written once for every sparse classifier (through its ``connectivity()``,
the protocol described in ``bench.classifiers.base``).

Per label: prune the smallest-magnitude active connections (a fraction of them, or those
under a threshold), then regrow as many among the inputs that were inactive before pruning —
uniformly at random (SET) or those with the largest |∂L/∂w| (RigL). The fan-in of every label
is therefore unchanged. All work is done on label chunks ``[Lc, d]``.
"""

from __future__ import annotations

import inspect
import time

import torch

from bench import losses
from bench.config import DSTConfig
from bench.dst.schedule import RewireSchedule
from bench.sparse import SparseTargets

CHUNK_ELEMENTS = 1 << 22  # [Lc, d] elements per label chunk (16 MiB of float32)


def connectivity_of(classifier):
    """The DST protocol object of a sparse classifier; a clear error for a dense one."""
    conn = classifier.connectivity() if hasattr(classifier, "connectivity") else None
    if conn is None:
        raise TypeError(f"{type(classifier).__name__} has no sparse connectivity to rewire "
                        f"(a sparse classifier returns it from connectivity(); dense layers have none)")
    return conn


def select_per_row(scores: torch.Tensor, allowed: torch.Tensor, counts: torch.Tensor, largest: bool) -> torch.Tensor:
    """Bool ``[Lc, d]``: in each row the ``counts[row]`` allowed entries with the largest (or
    smallest) score."""
    selected = torch.zeros_like(allowed)
    most = int(counts.max()) if counts.numel() else 0
    if most == 0:
        return selected
    fill = float("-inf") if largest else float("inf")
    picked = scores.masked_fill(~allowed, fill).topk(most, dim=1, largest=largest, sorted=True).indices
    keep = torch.arange(most, device=scores.device) < counts.unsqueeze(1)  # [Lc, most]
    rows = torch.arange(scores.shape[0], device=scores.device).unsqueeze(1).expand_as(picked)
    selected[rows[keep], picked[keep]] = True
    return selected


def random_per_row(allowed: torch.Tensor, counts: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Bool ``[Lc, d]``: ``counts[row]`` allowed entries per row, uniformly without replacement.

    Sequential rejection sampling: draw a few more ids per row than needed, drop those not
    allowed and repeats (keeping the earliest draw), keep the first ``counts[row]`` survivors.
    That is exactly uniform sampling without replacement and costs ``[Lc, m]`` work with
    m ≈ 2·count, instead of a random key per input (``[Lc, d]`` draws and a top-k over d).
    Rows left short (nearly full rows) fall back to random keys over all inputs.
    """
    num_rows, d = allowed.shape
    most = int(counts.max()) if counts.numel() else 0
    selected = torch.zeros_like(allowed)
    if most == 0:
        return selected
    draws = torch.randint(0, d, (num_rows, 2 * most + 8), generator=generator, device=allowed.device)
    ok = allowed.gather(1, draws)  # [Lc, m]
    order = draws.sort(dim=1, stable=True)  # equal ids stay in draw order
    repeat = torch.zeros_like(ok)
    repeat[:, 1:] = order.values[:, 1:] == order.values[:, :-1]
    ok &= ~torch.zeros_like(ok).scatter_(1, order.indices, repeat)  # later draws of an id
    keep = ok & (ok.cumsum(1) <= counts.unsqueeze(1))
    rows = torch.arange(num_rows, device=allowed.device).unsqueeze(1).expand_as(draws)
    selected[rows[keep], draws[keep]] = True
    short = keep.sum(1) < counts
    if short.any():
        keys = torch.rand(int(short.sum()), d, generator=generator, device=allowed.device)
        selected[short] = select_per_row(keys, allowed[short], counts[short], largest=True)
    return selected


class Rewirer:
    """Rewires one sparse classifier on the schedule of ``cfg``: after optimiser step ``s``,
    ``rewire(s, h, targets)`` when ``schedule.due(s)``. RigL scores missing connections with
    the gradient of ``loss``, which must be the loss the classifier trains with. The changed
    slots' state in ``optimizer`` is zeroed (``dst.optimizer_state=reset``) or left as it is
    (``keep``: a regrown connection continues with its slot's momentum or Adam moments)."""

    def __init__(self, classifier, cfg: DSTConfig, total_steps: int, optimizer=None, seed: int = 0,
                 loss: losses.Loss | None = None):
        self.conn = connectivity_of(classifier)
        self.classifier, self.cfg, self.optimizer = classifier, cfg, optimizer
        self.loss = losses.DEFAULT if loss is None else loss
        self.schedule = RewireSchedule(cfg, total_steps)
        # keep: asked of replace() only then, so a layer written before the option still rewires
        self._keep = {"keep_state": True} if cfg.optimizer_state == "keep" else {}
        if self._keep and "keep_state" not in inspect.signature(self.conn.replace).parameters:
            raise TypeError(f"dst.optimizer_state=keep: {type(self.conn).__name__}.replace() takes no "
                            f"'keep_state' argument, so it cannot keep the optimiser state of rewired slots")
        self.generator = torch.Generator(device=self.conn.param.device).manual_seed(seed)
        self.history: list[dict] = []

    def state_dict(self) -> dict:
        """What a resumed run needs to rewire as an uninterrupted one would: the SET generator's
        state and the history (the connectivity itself is in the classifier's buffers)."""
        return {"generator": self.generator.get_state(), "history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
        self.history = list(state["history"])

    @torch.no_grad()
    def rewire(self, step: int, h: torch.Tensor | None = None, targets: SparseTargets | None = None) -> dict:
        if self.cfg.regrow == "gradient" and (h is None or targets is None):
            raise ValueError("gradient (RigL) regrowth needs the batch's layer input h and targets")
        t0 = time.perf_counter()
        fraction, threshold = self.schedule.fraction(step), self.schedule.threshold(step)
        changed, pruned_sum = 0, 0.0
        d = self.conn.in_features
        rows = max(1, CHUNK_ELEMENTS // d)
        for lo in range(0, self.conn.num_labels, rows):
            hi = min(lo + rows, self.conn.num_labels)
            magnitude, in_use = self.conn.slots(lo, hi)  # [Lc, S]
            active = self.conn.active(lo, hi)  # [Lc, d]
            if self.cfg.prune == "fraction":
                wanted = (fraction * in_use.sum(1)).floor().long()
            else:
                wanted = (in_use & (magnitude < threshold)).sum(1)
            # never drop more than can be regrown: fan-in stays exact even when k is near d
            # (the count of used inputs comes from the slots: summing a bool [Lc, d] is slow)
            count = torch.minimum(wanted, d - in_use.sum(1))
            drop = select_per_row(magnitude, in_use, count, largest=False)  # [Lc, S]
            if self.cfg.regrow == "random":  # SET
                grow = random_per_row(~active, count, self.generator)  # [Lc, d]
            else:  # RigL
                grow = select_per_row(self._gradient_scores(lo, hi, h, targets), ~active, count, largest=True)
            self.conn.replace(lo, hi, drop, grow, self.cfg.regrow_init, self.optimizer, **self._keep)
            changed += int(count.sum())
            pruned_sum += float(magnitude[drop].sum())
        if hasattr(self.classifier, "check_connectivity"):
            self.classifier.check_connectivity()
        stats = {
            "step": step,
            "fraction": fraction if self.cfg.prune == "fraction" else None,
            "threshold": threshold if self.cfg.prune == "threshold" else None,
            "connections_changed": changed,
            "pruned_mean_abs_weight": pruned_sum / changed if changed else 0.0,
            "seconds": time.perf_counter() - t0,
        }
        self.history.append(stats)
        return stats

    def _gradient_scores(self, lo, hi, h, targets) -> torch.Tensor:
        if hasattr(self.conn, "gradient_scores"):  # rows are not labels (ffi-group: groups)
            return self.conn.gradient_scores(lo, hi, h, targets, self.loss)
        # RigL: |∂L/∂w[l, i]| = |Σ_b g[b, l] · h[b, i]| for this chunk only: [Lc, B] @ [B, d]
        logits = self.classifier.logits(h, lo, hi)
        grad = self.loss.grad(logits, targets, lo, hi, self.classifier.num_labels)  # [B, Lc]
        return (grad.t() @ h.float()).abs()
