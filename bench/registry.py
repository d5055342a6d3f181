"""One small registry class (timm-style) serving classifiers and methods alike.

Adding an entry is one decorated function or one ``register`` call in the file that owns it;
``create``/``get`` look names up and fail with a "did you mean" hint.
"""

from __future__ import annotations

import difflib
import fnmatch
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

from bench.errors import ConfigError, UnknownNameError


class Registry:
    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Any] = {}

    def register(self, name: str, entry: Any = None):
        """``registry.register('ffi', fn)`` or ``@registry.register('ffi')`` on a function/class."""

        def add(obj):
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = obj
            return obj

        return add(entry) if entry is not None else add

    def get(self, name: str) -> Any:
        if name not in self._entries:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f" — did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind} {name!r}{hint} (registered: {', '.join(self.names())})"
            )
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: str) -> bool:
        return name in self._entries


CLASSIFIERS = Registry("classifier")
METHODS = Registry("method")


def register_classifier(name: str) -> Callable:
    """Decorator for a classifier factory ``fn(in_features, num_labels, **kwargs) -> nn.Module``."""
    return CLASSIFIERS.register(name)


def create_classifier(name: str, in_features: int, num_labels: int, **kwargs):
    """``create_classifier('ffi', 768, 131072, fan_in=32)``; unknown options are a ConfigError."""
    _load_builtin_entries()
    factory = CLASSIFIERS.get(name)
    params = inspect.signature(factory).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        accepted = [p for p in list(params)[2:]]
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ConfigError(f"classifier {name!r} does not take {', '.join(unknown)}; "
                              f"it accepts: {', '.join(accepted) or 'no options'}")
    if in_features < 1 or num_labels < 1:
        raise ConfigError(f"classifier {name!r} needs in_features >= 1 and num_labels >= 1, "
                          f"got {in_features} and {num_labels}")
    return factory(in_features, num_labels, **kwargs)


def list_classifiers(pattern: str = "*") -> list[str]:
    _load_builtin_entries()
    return CLASSIFIERS.names(pattern)


@dataclass(frozen=True)
class Method:
    """A named preset: a description and the config overrides (dotted keys) that define it."""

    name: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)


def register_method(name: str, description: str, **overrides: Any) -> Method:
    """``register_method('ffi-static', '...', **{'model.classifier': 'ffi'})``."""
    return METHODS.register(name, Method(name, description, dict(overrides)))


def get_method(name: str) -> Method:
    _load_builtin_entries()
    return METHODS.get(name)


def list_methods(pattern: str = "*") -> list[str]:
    _load_builtin_entries()
    return METHODS.names(pattern)


def _load_builtin_entries() -> None:
    # Importing the packages runs their registrations; deferred so that importing the
    # registry alone stays cheap and free of cycles.
    import bench.classifiers  # noqa: F401
    import bench.methods  # noqa: F401
