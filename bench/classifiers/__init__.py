"""Output layers. Importing this package registers them: `dense`, `masked`, `ffi`, `dense-bottleneck`."""

from bench.classifiers.base import Classifier
from bench.classifiers.bottleneck import DenseBottleneckClassifier
from bench.classifiers.dense import DenseClassifier
from bench.classifiers.fixed_fan_in import FixedFanInClassifier
from bench.classifiers.masked import MaskedClassifier

__all__ = ["Classifier", "DenseBottleneckClassifier", "DenseClassifier", "FixedFanInClassifier", "MaskedClassifier"]
