"""Dynamic sparse training: when to rewire (schedule.py) and how connections are pruned and
regrown (rewire.py: SET and RigL), on any classifier that returns a ``connectivity()``
(the protocol in ``bench.classifiers.base``)."""

from bench.dst.rewire import Rewirer, connectivity_of
from bench.dst.schedule import RewireSchedule

__all__ = ["Rewirer", "RewireSchedule", "connectivity_of"]
