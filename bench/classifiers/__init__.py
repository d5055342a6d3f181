"""Output layers. Each built-in classifier is one module that registers itself with
``@register_classifier``; importing this package imports them all, so whatever creates
classifiers by name imports ``bench.classifiers`` (a classifier defined elsewhere only needs
its module imported before it is created)."""

from __future__ import annotations

import inspect

from bench.classifiers import bottleneck, dense, fixed_fan_in, group_fan_in, head_tail, masked  # noqa: F401  (registration)
from bench.classifiers.base import CLASSIFIERS, Classifier, register_classifier
from bench.classifiers.bottleneck import DenseBottleneckClassifier
from bench.classifiers.dense import DenseClassifier
from bench.classifiers.fixed_fan_in import FixedFanInClassifier
from bench.classifiers.group_fan_in import GroupFanInClassifier
from bench.classifiers.head_tail import HeadTailClassifier
from bench.classifiers.masked import MaskedClassifier
from bench.errors import ConfigError


def create_classifier(name: str, in_features: int, num_labels: int, **options) -> Classifier:
    """``create_classifier('ffi', 768, 131072, fan_in=32)``; an unknown name or option is a
    ConfigError naming what the factory accepts."""
    factory = CLASSIFIERS.get(name)
    accepted = factory_options(name)
    if accepted is not None:
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise ConfigError(f"classifier {name!r} does not take {', '.join(unknown)}; "
                              f"it accepts: {', '.join(accepted) or 'no options'}")
    if in_features < 1 or num_labels < 1:
        raise ConfigError(f"classifier {name!r} needs in_features >= 1 and num_labels >= 1, "
                          f"got {in_features} and {num_labels}")
    return factory(in_features, num_labels, **options)


def factory_options(name: str) -> list[str] | None:
    """The option names the factory of ``name`` takes (after ``in_features, num_labels``);
    ``None`` when it takes any (``**kwargs``)."""
    params = list(inspect.signature(CLASSIFIERS.get(name)).parameters.values())
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params[2:]]


def list_classifiers(pattern: str = "*") -> list[str]:
    return CLASSIFIERS.names(pattern)


__all__ = ["CLASSIFIERS", "Classifier", "DenseBottleneckClassifier", "DenseClassifier", "FixedFanInClassifier",
           "GroupFanInClassifier", "HeadTailClassifier", "MaskedClassifier", "factory_options",
           "create_classifier", "list_classifiers", "register_classifier"]
