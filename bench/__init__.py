"""xmc-dst-bench: dynamic sparse training of the output layer in extreme multi-label classification.

``bench.create_classifier`` / ``list_classifiers`` / ``register_classifier`` (from
``bench.classifiers``, which imports torch) and ``get_method`` / ``list_methods`` /
``register_method`` (from ``bench.methods``) are loaded on first use, so importing a light
module such as ``bench.config`` does not import torch.
"""

import importlib

_EXPORTS = {
    "create_classifier": "bench.classifiers",
    "list_classifiers": "bench.classifiers",
    "register_classifier": "bench.classifiers",
    "get_method": "bench.methods",
    "list_methods": "bench.methods",
    "register_method": "bench.methods",
}

__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
