"""Named methods: presets of classifier + DST + variant options, listed by `xmc-bench list`.

A method is only config overrides, so anything a method does can also be spelled out with
``key=value`` on the command line. Adding one is one ``register_method`` call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.registry import Registry

METHODS = Registry("method")


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
    return METHODS.get(name)


def list_methods(pattern: str = "*") -> list[str]:
    return METHODS.names(pattern)


register_method("dense", "dense nn.Linear output layer (the memory-hungry baseline)", **{"model.classifier": "dense"})
register_method(
    "masked-static",
    "dense weight x fixed random unstructured mask at the ffi sparsity (simulated sparsity: no memory saved)",
    **{"model.classifier": "masked"},
)
register_method(
    "ffi-static",
    "semi-structured fixed fan-in layer (k inputs per label, values [L,k] + indices [L,k]), no rewiring",
    **{"model.classifier": "ffi"},
)

_SET = {"dst.regrow": "random"}
_RIGL = {"dst.regrow": "gradient"}
register_method("ffi-set", "fixed fan-in rewired with SET: prune smallest |w| per label, regrow at random (fan-in stays k)",
                **{"model.classifier": "ffi", **_SET})
register_method("ffi-rigl", "fixed fan-in rewired with RigL: regrow the missing inputs of largest |dL/dw| (chunked)",
                **{"model.classifier": "ffi", **_RIGL})
register_method("masked-set", "masked dense layer rewired with SET (density constant, off-mask weights zero)",
                **{"model.classifier": "masked", **_SET})
register_method("masked-rigl", "masked dense layer rewired with RigL", **{"model.classifier": "masked", **_RIGL})

register_method("ffi-set-intermediate",
                "ffi-set behind a dense intermediate layer (model.intermediate, default 512, ReLU): restores gradient flow",
                **{"model.classifier": "ffi", **_SET, "model.intermediate": 512})
register_method("dense-bottleneck",
                "low-rank dense d → r → L with r chosen so its classifier memory matches ffi at model.fan_in (same memory, dense)",
                **{"model.classifier": "dense-bottleneck"})

_AUX = {"aux.scale": 0.4, "aux.cutoff": 0.5}  # the paper: α from 0.4–0.5 to 0 over the first epochs
register_method("ffi-set-aux",
                "ffi-set plus the auxiliary meta-classifier loss on label clusters (α 0.4 → 0 by half of training)",
                **{"model.classifier": "ffi", **_SET, **_AUX})
# The paper's method: what its six reference configurations (../shared/PAPER.md, "The reference
# configurations") share. What differs per dataset (fan-in, prune rule, interval, learning rates,
# intermediate layer, aux on/off and its cutoff, precision, batch, epochs) lives in the presets
# bench/presets/paper/*.yaml. The meta-classifier keys only act where aux.scale > 0.
_PAPER = {
    "model.classifier": "ffi", **_SET, "dst.regrow_init": 0.0, "dst.optimizer_state": "keep", "dst.end": 0.66,
    "train.loss": "squared_hinge", "train.loss_reduction": "mean", "model.bias_init": "zero",
    "train.optimizer_classifier": "adamw", "train.lr_classifier": 0.01,  # 3 of the 6 configs' lr (others 0.05, 0.08)
    "train.no_decay": "encoder",
    "aux.loss": "bce", "aux.loss_reduction": "mean", "train.aux_joins": "encoder", "train.lr_aux": 5e-4,
}
register_method("spartex",
                "the paper's SPARTEX: ffi + SET (zero init, optimiser state kept, to 66 %), squared hinge (mean), "
                "AdamW classifier; per-dataset settings in the paper/* presets",
                **_PAPER)

# HASTE-style hardware-aware layouts (issue 9)
register_method("ffi-group-set",
                "fixed fan-in with inputs shared by groups of model.group_size labels (indices [L/g, k]), groups rewired with SET",
                **{"model.classifier": "ffi-group", **_SET})
register_method("ffi-group-cluster-set",
                "ffi-group-set whose groups are label clusters (labels renumbered by the aux branch's clustering, groups of exactly g)",
                **{"model.classifier": "ffi-group", "model.group_order": "cluster", **_SET})
register_method("head-tail-set",
                "dense head for the most frequent labels (model.head_labels or model.head_fraction of positives), "
                "ffi tail rewired with SET",
                **{"model.classifier": "head-tail", **_SET})
register_method("head-tail-group-set",
                "head-tail-set whose tail is ffi-group (tail labels share inputs in groups of model.group_size)",
                **{"model.classifier": "head-tail", "model.tail": "ffi-group", **_SET})
