"""Output layers. Importing this package registers them: `dense`, `masked`, `ffi`, `dense-bottleneck`,
`ffi-group`, `head-tail`."""

from bench.classifiers.base import Classifier
from bench.classifiers.bottleneck import DenseBottleneckClassifier
from bench.classifiers.dense import DenseClassifier
from bench.classifiers.fixed_fan_in import FixedFanInClassifier
from bench.classifiers.group_fan_in import GroupFanInClassifier
from bench.classifiers.head_tail import HeadTailClassifier
from bench.classifiers.masked import MaskedClassifier

__all__ = ["Classifier", "DenseBottleneckClassifier", "DenseClassifier", "FixedFanInClassifier",
           "GroupFanInClassifier", "HeadTailClassifier", "MaskedClassifier"]
