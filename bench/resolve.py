"""A run's config resolved from its sources: defaults ← the method's overrides ← the dataset card's
recommended settings ← a shipped preset (``--preset paper/wiki10-31k``) ← the user's YAML file ←
``key=value`` overrides (later wins), checked.

A preset is a whole reference configuration (a shipped YAML file under ``bench/presets/``): it
beats the card's recommendations, which are general advice for the dataset, and the user's own
keys beat everything.

It sits above the config dataclasses (``bench.config``), the methods and the dataset cards,
because it needs all three; ``bench.config`` itself knows none of them.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

from bench.config import ALIASES, RunConfig, apply_overrides, check, flatten, load_yaml, parse_override
from bench.errors import ConfigError, UnknownNameError
from bench.methods import get_method

PRESET_DIR = Path(__file__).parent / "presets"


@dataclasses.dataclass(frozen=True)
class Preset:
    """A shipped configuration: its name (``paper/wiki10-31k``), a one-line description and its
    config keys (dotted)."""

    name: str
    description: str
    values: dict[str, Any]


def list_presets(pattern: str = "*") -> list[str]:
    """Names of the shipped presets (``folder/file`` without ``.yaml``), sorted."""
    import fnmatch

    names = (p.relative_to(PRESET_DIR).with_suffix("").as_posix() for p in PRESET_DIR.rglob("*.yaml"))
    return sorted(n for n in names if fnmatch.fnmatch(n, pattern))


def load_preset(name: str) -> Preset:
    """The shipped preset ``name``; an unknown name fails with a "did you mean" hint."""
    import yaml

    known = list_presets()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" — did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
        raise UnknownNameError(f"unknown preset {name!r}{hint} (shipped: {', '.join(known)})")
    path = PRESET_DIR / f"{name}.yaml"
    body = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if set(body) != {"description", "config"} or not isinstance(body["config"], dict):
        raise ConfigError(f"preset file {path} must hold exactly `description` and a `config` mapping")
    return Preset(name, str(body["description"]), flatten(body["config"]))


def resolve(overrides: list[str] | dict[str, Any], yaml_path: str | Path | None = None,
            preset: str | None = None) -> RunConfig:
    """defaults ← method overrides ← the dataset card's ``recommended`` settings ← preset ← YAML
    file ← overrides. ``method`` and ``data`` may come from the preset or either user source."""
    # imported here, not at the top: the data rooms load torch, which `import bench.sweep` avoids
    from bench.data.cards import card_recommended
    from bench.data.catalog import check_data

    shipped = {ALIASES.get(k, k): v for k, v in load_preset(preset).values.items()} if preset else {}
    user: dict[str, Any] = {}
    if yaml_path is not None:
        user.update(load_yaml(yaml_path))
    user.update(dict(parse_override(o) for o in overrides) if isinstance(overrides, list) else overrides)
    cfg = RunConfig()
    method = str(user.get("method", shipped.get("method", "")) or "")
    if method:
        cfg = apply_overrides(cfg, get_method(method).overrides)
    user_data = {ALIASES.get(k, k): v for k, v in user.items()}.get("data.name", shipped.get("data.name"))
    cfg = apply_overrides(cfg, card_recommended(str(user_data) if user_data is not None else cfg.data.name))
    cfg = apply_overrides(cfg, shipped)
    cfg = apply_overrides(cfg, user)
    check(cfg)
    # an unknown dataset fails here, before anything runs; data.path alone finds its folder's card
    return dataclasses.replace(cfg, data=check_data(cfg.data))
