"""A run's config resolved from its sources: defaults ← the method's preset ← the dataset card's
recommended settings ← the user's YAML file ← ``key=value`` overrides (later wins), checked.

It sits above the config dataclasses (``bench.config``), the methods and the dataset cards,
because it needs all three; ``bench.config`` itself knows none of them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bench.config import ALIASES, RunConfig, apply_overrides, check, load_yaml, parse_override
from bench.methods import get_method


def resolve(overrides: list[str] | dict[str, Any], yaml_path: str | Path | None = None) -> RunConfig:
    """defaults ← method preset ← the dataset card's ``recommended`` settings ← YAML file ←
    overrides. ``method`` and ``data`` may come from either user source."""
    # imported here, not at the top: the data rooms load torch, which `import bench.sweep` avoids
    from bench.data.cards import card_recommended
    from bench.data.catalog import check_data

    user: dict[str, Any] = {}
    if yaml_path is not None:
        user.update(load_yaml(yaml_path))
    user.update(dict(parse_override(o) for o in overrides) if isinstance(overrides, list) else overrides)
    cfg = RunConfig()
    method = str(user.get("method", "") or "")
    if method:
        cfg = apply_overrides(cfg, get_method(method).overrides)
    user_data = {ALIASES.get(k, k): v for k, v in user.items()}.get("data.name")
    cfg = apply_overrides(cfg, card_recommended(str(user_data) if user_data is not None else cfg.data.name))
    cfg = apply_overrides(cfg, user)
    check(cfg)
    # an unknown dataset fails here, before anything runs; data.path alone finds its folder's card
    return dataclasses.replace(cfg, data=check_data(cfg.data))
