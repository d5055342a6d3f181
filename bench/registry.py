"""One small registry class (timm-style) serving classifiers, methods, losses, encoders and
datasets alike.

Each registry lives beside what it holds (``bench.classifiers.base.CLASSIFIERS``,
``bench.methods.METHODS``, ``bench.losses.LOSSES``, …); adding an entry is one decorated
function or one ``register`` call in the file that owns it; ``get`` looks a name up and fails
with a "did you mean" hint. This module imports nothing of the package but its errors.
"""

from __future__ import annotations

import difflib
import fnmatch
from typing import Any

from bench.errors import UnknownNameError


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
