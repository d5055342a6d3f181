"""Named methods: presets of classifier + DST + variant options, listed by `xmc-bench list`.

A method is only config overrides, so anything a method does can also be spelled out with
``key=value`` on the command line.
"""

from bench.registry import register_method

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
