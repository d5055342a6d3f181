"""Fixed fan-in ops: one autograd entry point (``fixed_fan_in``) over swappable backends;
``reference`` (pure torch) is the oracle, ``cpu`` (compiled C) runs on CPU tensors,
``triton`` on CUDA tensors."""

from bench.kernels.ops import (
    Backend,
    fixed_fan_in,
    list_backends,
    register_backend,
    select_backend,
    use_backend,
)
from bench.kernels import cpu  # noqa: F401,E402 — registers the compiled CPU backend


def _register_triton() -> None:
    """The Triton backend runs on CUDA tensors only: registered where a GPU and triton exist."""
    import torch

    if not torch.cuda.is_available():
        return
    try:
        from bench.kernels import triton_ffi  # noqa: F401 — registers "triton"
    except ImportError as err:
        import warnings

        warnings.warn(f"fixed fan-in Triton backend unavailable (CUDA tensors use another backend): {err}",
                      RuntimeWarning, stacklevel=2)


_register_triton()

__all__ = ["Backend", "fixed_fan_in", "list_backends", "register_backend", "select_backend", "use_backend"]
