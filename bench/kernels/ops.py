"""The one autograd entry point of the fixed fan-in op, and the table of its backends.

A backend is three functions (forward, grad wrt input, grad wrt values) plus a predicate
saying whether it can run on a given tensor. ``select_backend`` picks the first available one
in registration order, newest first; ``XMC_FFI_BACKEND=name`` (or ``backend=``) forces one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import torch

from bench.errors import ConfigError
from bench.kernels import reference


@dataclass(frozen=True)
class Backend:
    name: str
    forward: Callable  # (x [B,d], values [L,k], indices [L,k]) -> [B, L]
    grad_input: Callable  # (grad_out [B,L], values, indices, in_features) -> [B, d]
    grad_values: Callable  # (grad_out [B,L], x, indices) -> [L, k]
    available: Callable[[torch.Tensor], bool]


_BACKENDS: dict[str, Backend] = {}


def register_backend(name, forward, grad_input, grad_values, available=lambda x: True) -> Backend:
    backend = Backend(name, forward, grad_input, grad_values, available)
    # newest first: a specialised backend registered later is preferred to the reference
    _BACKENDS.update({name: backend, **{k: v for k, v in _BACKENDS.items() if k != name}})
    return backend


def list_backends() -> list[str]:
    return list(_BACKENDS)


def select_backend(x: torch.Tensor, backend: str | None = None) -> str:
    forced = backend or os.environ.get("XMC_FFI_BACKEND")
    if forced:
        if forced not in _BACKENDS:
            raise ConfigError(f"unknown fixed fan-in backend {forced!r}; available: {', '.join(_BACKENDS)}")
        if not _BACKENDS[forced].available(x):
            raise ConfigError(f"fixed fan-in backend {forced!r} cannot run on {x.device} / {x.dtype}")
        return forced
    return next(name for name, b in _BACKENDS.items() if b.available(x))


class _FixedFanIn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, values, indices, backend_name):
        ctx.save_for_backward(x, values, indices)
        ctx.backend_name = backend_name
        return _BACKENDS[backend_name].forward(x, values, indices)

    @staticmethod
    def backward(ctx, grad_out):
        x, values, indices = ctx.saved_tensors
        backend = _BACKENDS[ctx.backend_name]
        grad_out = grad_out.contiguous()
        grad_x = backend.grad_input(grad_out, values, indices, x.shape[1]).to(x.dtype) if ctx.needs_input_grad[0] else None
        grad_values = backend.grad_values(grad_out, x, indices).to(values.dtype) if ctx.needs_input_grad[1] else None
        return grad_x, grad_values, None, None


def fixed_fan_in(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, backend: str | None = None) -> torch.Tensor:
    """``out[b, l] = Σ_j values[l, j] · x[b, indices[l, j]]``: ``[B, d] → [B, L]``. Indices get no gradient."""
    if x.dim() != 2 or values.dim() != 2 or values.shape != indices.shape:
        raise ValueError(f"fixed_fan_in expects x [B, d], values [L, k], indices [L, k]; got "
                         f"{tuple(x.shape)}, {tuple(values.shape)}, {tuple(indices.shape)}")
    return _FixedFanIn.apply(x, values, indices, select_backend(x, backend))


register_backend("reference", reference.ffi_forward, reference.ffi_grad_input, reference.ffi_grad_values)
