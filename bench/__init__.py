"""xmc-dst-bench: dynamic sparse training of the output layer in extreme multi-label classification."""

from bench.registry import (
    create_classifier,
    get_method,
    list_classifiers,
    list_methods,
    register_classifier,
    register_method,
)

__all__ = [
    "create_classifier",
    "get_method",
    "list_classifiers",
    "list_methods",
    "register_classifier",
    "register_method",
]
__version__ = "0.1.0"
