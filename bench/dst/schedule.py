"""When to rewire and how much: every ``interval`` steps between ``start`` and ``end`` (fractions
of training), with the rewired fraction (or the pruning threshold) decaying by cosine from its
initial value to zero (the threshold: to ``dst.threshold_floor``) over that window, or staying
constant."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bench.config import DSTConfig


@dataclass(frozen=True)
class RewireSchedule:
    cfg: DSTConfig
    total_steps: int

    @property
    def start_step(self) -> int:
        return int(round(self.cfg.start * self.total_steps))

    @property
    def end_step(self) -> int:
        return int(round(self.cfg.end * self.total_steps))

    def due(self, step: int) -> bool:
        """Rewire after optimiser step ``step`` (1-based)?"""
        return (self.cfg.regrow != "none" and self.start_step < step < self.end_step
                and (step - self.start_step) % self.cfg.interval == 0)

    def decay_factor(self, step: int) -> float:
        if self.cfg.decay == "constant":
            return 1.0
        span = max(1, self.end_step - self.start_step)
        progress = min(1.0, max(0.0, (step - self.start_step) / span))
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    def fraction(self, step: int) -> float:
        """Share of each label's connections to rewire (prune=fraction)."""
        return self.cfg.fraction * self.decay_factor(step)

    def threshold(self, step: int) -> float:
        """Magnitude below which connections are pruned (prune=threshold): from ``threshold`` down
        to ``threshold_floor``."""
        floor = self.cfg.threshold_floor
        if floor == 0:  # the plain decay to 0, with the same float operations
            return self.cfg.threshold * self.decay_factor(step)
        return floor + (self.cfg.threshold - floor) * self.decay_factor(step)
