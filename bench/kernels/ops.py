"""The one autograd entry point of the fixed fan-in op, and the table of its backends.

A backend is three functions (forward, grad wrt input, grad wrt values), a predicate saying
whether it can run on a given input, and a priority. Adding one is a single call in the file
that owns it::

    register_backend("triton", fwd, grad_x, grad_v, available=lambda x: x.is_cuda, priority=10)

``select_backend`` picks the available backend of highest priority (ties: the one registered
first); the pure-torch ``reference`` is the fallback. To force one, in order of precedence:
``fixed_fan_in(..., backend=name)``, ``with use_backend(name):``, ``XMC_FFI_BACKEND=name``.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from bench.errors import ConfigError
from bench.kernels import reference

ENV_VAR = "XMC_FFI_BACKEND"


@dataclass(frozen=True)
class Backend:
    name: str
    forward: Callable  # (x [B, d], values [L, k], indices [L, k]) -> [B, L]
    grad_input: Callable  # (grad_out [B, L], values, indices, in_features) -> [B, d]
    grad_values: Callable  # (grad_out [B, L], x, indices) -> [L, k]
    available: Callable[[torch.Tensor], bool]  # can it run on this input (device, dtype)?
    priority: int  # higher wins among the available ones
    # (grad_out, x, values, indices, want_x, want_values) -> (grad_x | None, grad_values | None)
    # from one pass over grad_out; None: grad_input and grad_values are called one by one
    grads: Callable | None = None


_BACKENDS: dict[str, Backend] = {}
_FORCED: ContextVar[str | None] = ContextVar("xmc_ffi_backend", default=None)


def _always(x: torch.Tensor) -> bool:
    return True


def register_backend(name: str, forward: Callable, grad_input: Callable, grad_values: Callable,
                     available: Callable[[torch.Tensor], bool] = _always, priority: int = 0,
                     grads: Callable | None = None) -> Backend:
    """Add (or replace) a backend; every backend must match ``reference`` in the tests."""
    backend = Backend(name, forward, grad_input, grad_values, available, priority, grads)
    _BACKENDS[name] = backend
    return backend


def list_backends() -> list[str]:
    return list(_BACKENDS)


def get_backend(name: str) -> Backend:
    """The registered backend ``name`` (a ConfigError listing the registered ones if unknown)."""
    _check_known(name)
    return _BACKENDS[name]


def _check_known(name: str) -> None:
    if name not in _BACKENDS:
        raise ConfigError(f"unknown fixed fan-in backend {name!r}; registered: {', '.join(_BACKENDS)}")


@contextmanager
def use_backend(name: str | None) -> Iterator[None]:
    """Force ``name`` for every ``fixed_fan_in`` call inside the block (``None``: automatic)."""
    if name is not None:
        _check_known(name)
    token = _FORCED.set(name)
    try:
        yield
    finally:
        _FORCED.reset(token)


def forced_backend(backend: str | None = None) -> str | None:
    """The backend forced by the argument, ``use_backend`` or ``XMC_FFI_BACKEND`` (in that order)."""
    return backend or _FORCED.get() or os.environ.get(ENV_VAR) or None


def select_backend(x: torch.Tensor, backend: str | None = None) -> str:
    """The backend that will run ``fixed_fan_in`` on input ``x``."""
    forced = forced_backend(backend)
    if forced:
        _check_known(forced)
        if not _BACKENDS[forced].available(x):
            raise ConfigError(f"fixed fan-in backend {forced!r} cannot run on {x.device} / {x.dtype}")
        return forced
    # max() keeps the first of equal priorities, i.e. the earliest registered
    return max((b for b in _BACKENDS.values() if b.available(x)), key=lambda b: b.priority).name


class _FixedFanIn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, values, indices, backend_name):
        ctx.save_for_backward(x, values, indices)
        ctx.backend_name = backend_name  # backward runs on the backend the forward used
        return _BACKENDS[backend_name].forward(x, values, indices)

    @staticmethod
    def backward(ctx, grad_out):
        x, values, indices = ctx.saved_tensors
        backend = _BACKENDS[ctx.backend_name]
        grad_out = grad_out.contiguous()
        grad_x = grad_values = None
        if backend.grads is not None and any(ctx.needs_input_grad[:2]):
            grad_x, grad_values = backend.grads(grad_out, x, values, indices, *ctx.needs_input_grad[:2])
            return (grad_x.to(x.dtype) if grad_x is not None else None,
                    grad_values.to(values.dtype) if grad_values is not None else None, None, None)
        if ctx.needs_input_grad[0]:
            grad_x = backend.grad_input(grad_out, values, indices, x.shape[1]).to(x.dtype)
        if ctx.needs_input_grad[1]:
            grad_values = backend.grad_values(grad_out, x, indices).to(values.dtype)
        return grad_x, grad_values, None, None  # indices and the backend name get no gradient


def fixed_fan_in(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                 backend: str | None = None) -> torch.Tensor:
    """``out[b, l] = Σ_j values[l, j] · x[b, indices[l, j]]``: ``[B, d] → [B, L]``.

    ``indices`` is an integer ``[L, k]`` tensor of input ids in ``[0, d)`` (not checked here: the
    classifier owns that invariant); it never receives a gradient.
    """
    if x.dim() != 2 or values.dim() != 2 or values.shape != indices.shape:
        raise ValueError(f"fixed_fan_in expects x [B, d], values [L, k], indices [L, k]; got "
                         f"{tuple(x.shape)}, {tuple(values.shape)}, {tuple(indices.shape)}")
    if indices.is_floating_point() or indices.is_complex() or indices.dtype == torch.bool:
        raise ValueError(f"fixed_fan_in expects integer indices, got {indices.dtype}")
    return _FixedFanIn.apply(x, values, indices, select_backend(x, backend))


# The oracle is the fallback: any other backend that can run is preferred to it.
register_backend("reference", reference.ffi_forward, reference.ffi_grad_input, reference.ffi_grad_values,
                 priority=-1)
