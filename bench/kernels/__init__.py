"""Fixed fan-in ops: one autograd entry point (``fixed_fan_in``) over swappable backends;
``reference`` (pure torch) is the oracle, ``cpu`` (compiled C) runs on CPU tensors."""

from bench.kernels.ops import (
    Backend,
    fixed_fan_in,
    list_backends,
    register_backend,
    select_backend,
    use_backend,
)
from bench.kernels import cpu  # noqa: F401,E402 — registers the compiled CPU backend

__all__ = ["Backend", "fixed_fan_in", "list_backends", "register_backend", "select_backend", "use_backend"]
