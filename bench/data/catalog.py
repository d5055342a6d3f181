"""Datasets by name: ``load_dataset(cfg.data)``. A new dataset is one registration here."""

from __future__ import annotations

from bench.config import DataConfig
from bench.registry import Registry

DATASETS = Registry("dataset")


@DATASETS.register("synthetic")
def _synthetic(cfg: DataConfig):
    from bench.data.synthetic import make_synthetic

    return make_synthetic(
        num_labels=cfg.num_labels,
        num_train=cfg.num_train,
        num_test=cfg.num_test,
        num_features=cfg.num_features,
        avg_labels_per_point=cfg.avg_labels_per_point,
        zipf_exponent=cfg.zipf_exponent,
        seed=cfg.seed,
    )


def load_dataset(cfg: DataConfig):
    dataset = DATASETS.get(cfg.name)(cfg)
    dataset.validate()
    return dataset
