"""Datasets: XC-format readers, the synthetic generator, batching and propensities."""
