"""Dynamic sparse training: when to rewire (schedule.py), what a sparse classifier exposes
(connectivity.py), and how connections are pruned and regrown (rewire.py: SET and RigL)."""

from bench.dst.connectivity import connectivity_of, register_connectivity
from bench.dst.rewire import Rewirer
from bench.dst.schedule import RewireSchedule

__all__ = ["Rewirer", "RewireSchedule", "connectivity_of", "register_connectivity"]
