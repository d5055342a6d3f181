"""Fixed fan-in ops: one autograd entry point (``fixed_fan_in``) over swappable backends;
``reference`` (pure torch) is the oracle."""

from bench.kernels.ops import (
    Backend,
    fixed_fan_in,
    list_backends,
    register_backend,
    select_backend,
    use_backend,
)

__all__ = ["Backend", "fixed_fan_in", "list_backends", "register_backend", "select_backend", "use_backend"]
