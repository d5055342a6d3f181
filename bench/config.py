"""Run configuration: one frozen dataclass per concern, resolved from defaults, a method's
preset, an optional YAML file and ``a.b=c`` overrides (in that order, later wins).

Every field carries a one-line comment; ``xmc-bench run --help-config`` prints them.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import threading
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    name: str = "synthetic"  # dataset; `synthetic` is built in (no download)
    num_labels: int = 4096  # synthetic: size of the label space L
    num_train: int = 20000  # synthetic: training points
    num_test: int = 4000  # synthetic: test points
    num_features: int = 20000  # synthetic: bag-of-words vocabulary size
    avg_labels_per_point: float = 5.0  # synthetic: mean number of positive labels per point
    zipf_exponent: float = 1.0  # synthetic: label frequency ~ rank^-exponent
    seed: int = 0  # synthetic: data seed (kept apart from the run seed so seeds vary the model only)
    path: str = ""  # real datasets: folder of its files ("" = $XMC_SHARED_DATA/<folder> or ../shared/data/<folder>)
    test_fraction: float = 0.2  # real datasets without an official split: fraction of points in the seeded test split
    split_seed: int = 0  # real datasets without an official split: seed of that test split
    cache_dir: str = ""  # Arrow cache of `xmc-bench data prepare` ("" = $XMC_CACHE_DIR or ~/.cache/xmc-dst-bench)


@dataclass(frozen=True)
class ModelConfig:
    classifier: str = "dense"  # registered classifier name (`xmc-bench list`)
    encoder: str = "bow"  # encoder: `bow` (TF-IDF EmbeddingBag) | `transformer` (HF AutoModel from model.encoder_path)
    embed_dim: int = 256  # d: encoder output size = classifier input size (bow; a transformer's is its hidden size)
    encoder_path: str = ""  # transformer: local directory of the HF model and its tokenizer (nothing is downloaded)
    encoder_init: str = "pretrained"  # transformer: `pretrained` (the directory's weights) | `random` (its config.json only)
    pooling: str = "mean"  # transformer: token pooling, `mean` (over non-padding tokens) | `cls`
    max_len: int = 128  # transformer: tokens per text (longer texts are truncated)
    activation: str = "relu"  # encoder nonlinearity: relu | gelu | tanh | none
    dropout: float = 0.0  # dropout on the encoder output
    fan_in: int = 32  # k: inputs per label for fixed fan-in classifiers
    density: float = 0.0  # masked classifier density; 0 means fan_in / embed_dim (same sparsity as ffi)
    rank: int = 0  # dense-bottleneck: rank r of d → r → L (0: chosen to match the memory of ffi with match_fan_in)
    match_fan_in: int = 0  # dense-bottleneck: fan-in k of the ffi layer whose classifier memory r matches (0: model.fan_in)
    group_size: int = 32  # ffi-group: labels per group sharing one set of k inputs
    group_order: str = "contiguous"  # ffi-group: groups of contiguous label ids | cluster (labels renumbered so each group is a label cluster)
    head_labels: int = 0  # head-tail: labels in the dense head, the most frequent (0: chosen by head_fraction)
    head_fraction: float = 0.5  # head-tail: the head is the fewest most frequent labels holding this fraction of training positives
    tail: str = "ffi"  # head-tail: the tail layer, ffi | ffi-group (its labels share inputs in groups of model.group_size)
    label_chunk: int = 16384  # labels per slice in streaming top-k inference
    bias_init: str = "prior"  # classifier bias: `prior` (logit of the mean label frequency) or `zero`
    intermediate: int = 0  # size of a dense layer between encoder and classifier (0: none); the classifier then takes this size
    intermediate_activation: str = "relu"  # nonlinearity of the intermediate layer: relu | gelu | tanh | none
    intermediate_dropout: float = 0.0  # dropout on the intermediate layer's output


@dataclass(frozen=True)
class DSTConfig:
    regrow: str = "none"  # none (static connectivity) | random (SET) | gradient (RigL)
    prune: str = "fraction"  # fraction: drop the smallest `fraction` of each label's weights | threshold: drop |w| < threshold
    interval: int = 25  # rewire every this many optimiser steps
    start: float = 0.0  # first rewire after this fraction of training
    end: float = 0.66  # no rewiring after this fraction of training (the paper: 66 %)
    fraction: float = 0.2  # rewired fraction of each label's connections at `start` (prune=fraction)
    threshold: float = 0.01  # magnitude threshold at `start` (prune=threshold)
    decay: str = "cosine"  # how fraction/threshold decay from start to end: cosine (to 0) | constant
    regrow_init: float = 0.0  # value of regrown weights (the paper: zero)


@dataclass(frozen=True)
class AuxConfig:
    scale: float = 0.0  # α at the start: weight of the meta-classifier loss in (1 − α)·main + α·meta (0: no aux branch)
    cutoff: float = 0.5  # when α reaches 0, in aux.cutoff_unit; after it the branch is off (not computed)
    cutoff_unit: str = "fraction"  # unit of aux.cutoff: fraction (of all training steps) | epochs
    schedule: str = "cosine"  # how α decays from scale to 0 at cutoff: cosine (the paper) | linear | constant
    num_clusters: int = 0  # label clusters C the meta-classifier predicts (0: about L / 64, the paper's cluster size)
    centroids: str = "tfidf"  # label centroid for clustering: tfidf (mean projected TF-IDF) | encoder (mean encoder feature at init)
    cluster_dim: int = 64  # random projection dimension of the TF-IDF label centroids used for clustering
    cluster_iters: int = 8  # balanced 2-means rounds per bisection of the label clustering
    cache: bool = True  # keep the clustering in the dataset cache (data.cache_dir) and reuse it


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 3  # passes over the training set
    max_steps: int = 0  # stop after this many optimiser steps (0: no limit)
    batch_size: int = 256  # training batch size
    lr_encoder: float = 1e-2  # AdamW learning rate of the encoder
    weight_decay_encoder: float = 0.01  # AdamW weight decay of the encoder
    lr_classifier: float = 0.5  # SGD learning rate of the classifier (sum-over-labels BCE: larger than the paper's mean-reduced 0.05)
    momentum: float = 0.9  # SGD momentum of the classifier
    weight_decay_classifier: float = 1e-4  # SGD weight decay of the classifier
    warmup_steps: int = 20  # linear warm-up steps before the cosine decay
    log_every: int = 10  # log the training loss every this many steps
    threads: int = 0  # torch CPU threads (0: torch's default)
    device: str = "auto"  # auto | cpu | cuda
    fused_loss: bool = True  # classifier loss label chunk by label chunk (no [B, L] logits); false: unfused, for comparison


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = 1024  # test batch size for streaming top-k evaluation
    max_k: int = 5  # metrics at k = 1, 3, 5 (those <= max_k)
    propensity_a: float = 0.0  # Jain et al. propensity A; 0: the dataset card's value (0.55 without a card)
    propensity_b: float = 0.0  # Jain et al. propensity B; 0: the dataset card's value (1.5 without a card)
    every_epoch: bool = True  # evaluate after every epoch (else only after the last)


@dataclass(frozen=True)
class TrackingConfig:
    wandb: str = "offline"  # offline | online | disabled; the local JSONL record is written regardless
    project: str = "xmc-dst-bench"  # W&B project
    wandb_dir: str = ""  # where W&B writes its run folders ("" means <results_dir>/wandb)
    group: str = ""  # W&B group (the suite sets one per invocation)


@dataclass(frozen=True)
class CheckpointConfig:
    enabled: bool = True  # write checkpoints at epoch ends (and every `every` steps) and resume from them
    every: int = 0  # also checkpoint every this many optimiser steps (0: at epoch ends only)
    keep: int = 2  # newest checkpoints kept per configuration (older ones are deleted)
    resume: str = "auto"  # auto: continue from the newest loadable checkpoint of this config | never: start afresh (deleting them)


@dataclass(frozen=True)
class RunConfig:
    method: str = ""  # registered method (preset); its overrides apply before the user's
    seed: int = 0  # run seed: model init, shuffling
    results_dir: str = "results"  # where run records (runs.jsonl) and W&B folders go
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dst: DSTConfig = field(default_factory=DSTConfig)
    aux: AuxConfig = field(default_factory=AuxConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


# Allowed values for string fields whose choices are fixed here; registered names are
# checked where they are looked up (the registry suggests close matches).
CHOICES = {
    "model.encoder": ("bow", "transformer"),
    "model.encoder_init": ("pretrained", "random"),
    "model.pooling": ("mean", "cls"),
    "model.activation": ("relu", "gelu", "tanh", "none"),
    "model.bias_init": ("prior", "zero"),
    "model.intermediate_activation": ("relu", "gelu", "tanh", "none"),
    "train.device": ("auto", "cpu", "cuda"),
    "dst.regrow": ("none", "random", "gradient"),
    "dst.prune": ("fraction", "threshold"),
    "dst.decay": ("cosine", "constant"),
    "aux.schedule": ("cosine", "linear", "constant"),
    "aux.cutoff_unit": ("fraction", "epochs"),
    "model.group_order": ("contiguous", "cluster"),
    "model.tail": ("ffi", "ffi-group"),
    "aux.centroids": ("tfidf", "encoder"),
    "tracking.wandb": ("offline", "online", "disabled"),
    "checkpoint.resume": ("auto", "never"),
}


_FIELD_DOCS_LOCK = threading.Lock()


def field_docs(cls=RunConfig, prefix: str = "") -> dict[str, tuple[str, Any, str]]:
    """``{dotted key: (type name, default, comment)}`` for every leaf field. Computed once:
    ``inspect.getsource`` parses the module, and CPython 3.11's parser is not safe to run from
    several threads at once (sweep workers resolve configs in threads)."""
    with _FIELD_DOCS_LOCK:
        return dict(_field_docs(cls, prefix))


@functools.lru_cache(maxsize=None)
def _field_docs(cls, prefix: str) -> dict[str, tuple[str, Any, str]]:
    import inspect

    comments = {}
    for line in inspect.getsource(cls).splitlines():
        name, sep, rest = line.strip().partition(":")
        if sep and "#" in rest:
            comments[name] = rest.split("#", 1)[1].strip()
    hints = typing.get_type_hints(cls)
    out = {}
    default = cls()
    for f in dataclasses.fields(cls):
        key = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_field_docs(hints[f.name], key + "."))
        else:
            out[key] = (hints[f.name].__name__, getattr(default, f.name), comments.get(f.name, ""))
    return out


def to_dict(cfg: RunConfig) -> dict:
    return dataclasses.asdict(cfg)


def from_dict(values: dict) -> RunConfig:
    """Rebuild a config from ``to_dict`` output (or a nested YAML mapping), checking every key."""
    return apply_overrides(RunConfig(), flatten(values))


def flatten(values: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


NOT_IN_HASH = ("results_dir", "tracking", "checkpoint")


def config_hash(cfg: RunConfig) -> str:
    """Stable identity of a resolved config: runs with the same hash are the same experiment.
    Where records go, how they are mirrored and checkpointed (``results_dir``, ``tracking``,
    ``checkpoint``) is not part of it: a resumed run is the same experiment."""
    return config_dict_hash(to_dict(cfg))


def config_dict_hash(values: dict) -> str:
    """``config_hash`` of a config as a record stores it (``to_dict`` output, of any version).

    Only the values that differ from today's defaults are hashed, so adding a config field
    whose default keeps the old behaviour leaves every earlier hash, and every recorded run,
    valid: an old record simply lacks the field, which reads as its default."""
    defaults = _default_flat()
    changed = {k: v for k, v in flatten(values).items()
               if k.split(".")[0] not in NOT_IN_HASH and (k not in defaults or defaults[k] != v)}
    blob = json.dumps(changed, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _default_flat() -> dict[str, Any]:
    return flatten(to_dict(RunConfig()))


def parse_override(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. data.num_labels=4096)")
    return key.strip(), value.strip()


# Short spellings: `data=NAME` is `data.name=NAME`.
ALIASES = {"data": "data.name"}


def apply_overrides(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return a copy of ``cfg`` with dotted ``overrides`` applied; values may be strings (CLI)
    or already-typed values (presets, YAML)."""
    known = field_docs()
    for key, value in overrides.items():
        key = ALIASES.get(key, key)
        if key not in known:
            close = difflib.get_close_matches(key, list(known), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {key!r}{hint} (see `xmc-bench run --help-config`)")
        cfg = _replace_path(cfg, key.split("."), _coerce(key, known[key][0], value))
    return cfg


def _replace_path(obj, path: list[str], value):
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    return dataclasses.replace(obj, **{path[0]: _replace_path(getattr(obj, path[0]), path[1:], value)})


def _coerce(key: str, type_name: str, value: Any) -> Any:
    try:
        if type_name == "bool":
            if isinstance(value, bool):
                out = value
            elif str(value).lower() in ("1", "true", "yes", "on"):
                out = True
            elif str(value).lower() in ("0", "false", "no", "off"):
                out = False
            else:
                raise ValueError
        elif type_name == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value) if not isinstance(value, str) else int(value.replace("_", ""))
        elif type_name == "float":
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
        else:
            out = str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key!r} expects a {type_name}, got {value!r}") from None
    if key in CHOICES and out not in CHOICES[key]:
        raise ConfigError(f"config key {key!r} must be one of {', '.join(CHOICES[key])}; got {out!r}")
    return out


def check(cfg: RunConfig) -> None:
    """Reject impossible configs before anything runs, naming the field."""
    positive = {
        "data.num_labels": cfg.data.num_labels,
        "data.num_train": cfg.data.num_train,
        "data.num_test": cfg.data.num_test,
        "data.num_features": cfg.data.num_features,
        "model.embed_dim": cfg.model.embed_dim,
        "model.fan_in": cfg.model.fan_in,
        "model.label_chunk": cfg.model.label_chunk,
        "model.max_len": cfg.model.max_len,
        "train.batch_size": cfg.train.batch_size,
        "eval.batch_size": cfg.eval.batch_size,
        "eval.max_k": cfg.eval.max_k,
        "train.log_every": cfg.train.log_every,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"config key {key!r} must be positive, got {value}")
    nonneg = {
        "train.epochs": cfg.train.epochs,
        "train.max_steps": cfg.train.max_steps,
        "train.warmup_steps": cfg.train.warmup_steps,
        "train.threads": cfg.train.threads,
        "checkpoint.every": cfg.checkpoint.every,
    }
    for key, value in nonneg.items():
        if value < 0:
            raise ConfigError(f"config key {key!r} must be >= 0, got {value}")
    if cfg.checkpoint.keep < 1:
        raise ConfigError(f"config key 'checkpoint.keep' must be at least 1, got {cfg.checkpoint.keep}")
    if cfg.train.epochs == 0 and cfg.train.max_steps == 0:
        raise ConfigError("set train.epochs or train.max_steps: both are 0, so nothing would train")
    if cfg.dst.interval <= 0:
        raise ConfigError(f"config key 'dst.interval' must be positive, got {cfg.dst.interval}")
    if not 0.0 <= cfg.dst.start <= cfg.dst.end <= 1.0:
        raise ConfigError(f"config keys 'dst.start' and 'dst.end' must satisfy 0 <= start <= end <= 1, "
                          f"got start={cfg.dst.start}, end={cfg.dst.end}")
    if not 0.0 <= cfg.dst.fraction <= 1.0:
        raise ConfigError(f"config key 'dst.fraction' must be in [0, 1], got {cfg.dst.fraction}")
    if cfg.dst.threshold < 0:
        raise ConfigError(f"config key 'dst.threshold' must be >= 0, got {cfg.dst.threshold}")
    if not 0.0 <= cfg.model.density <= 1.0:
        raise ConfigError(f"config key 'model.density' must be in [0, 1], got {cfg.model.density}")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError(f"config key 'model.dropout' must be in [0, 1), got {cfg.model.dropout}")
    for key in ("rank", "match_fan_in"):
        if getattr(cfg.model, key) < 0:
            raise ConfigError(f"config key 'model.{key}' must be >= 0, got {getattr(cfg.model, key)}")
    if not 0.0 <= cfg.aux.scale <= 1.0:
        raise ConfigError(f"config key 'aux.scale' must be in [0, 1], got {cfg.aux.scale}")
    if cfg.model.group_order == "cluster" and cfg.model.classifier != "ffi-group":
        raise ConfigError(f"config key 'model.group_order' is 'cluster', which needs model.classifier=ffi-group, "
                          f"got {cfg.model.classifier!r}")
    if cfg.aux.cutoff_unit == "fraction" and not 0.0 < cfg.aux.cutoff <= 1.0:
        raise ConfigError(f"config key 'aux.cutoff' must be in (0, 1] (a fraction of training), got {cfg.aux.cutoff}")
    if cfg.aux.cutoff_unit == "epochs" and not cfg.aux.cutoff > 0:
        raise ConfigError(f"config key 'aux.cutoff' must be > 0 (epochs), got {cfg.aux.cutoff}")
    for key in ("num_clusters", "cluster_dim", "cluster_iters"):
        if getattr(cfg.aux, key) < (0 if key == "num_clusters" else 1):
            raise ConfigError(f"config key 'aux.{key}' must be {'>= 0' if key == 'num_clusters' else 'positive'}, "
                              f"got {getattr(cfg.aux, key)}")
    if cfg.model.intermediate < 0:
        raise ConfigError(f"config key 'model.intermediate' must be >= 0 (0: no layer), got {cfg.model.intermediate}")
    if not 0.0 <= cfg.model.intermediate_dropout < 1.0:
        raise ConfigError(f"config key 'model.intermediate_dropout' must be in [0, 1), got {cfg.model.intermediate_dropout}")


def resolve(overrides: list[str] | dict[str, Any], yaml_path: str | Path | None = None) -> RunConfig:
    """defaults ← method preset ← YAML file ← overrides. ``method`` may come from either source."""
    from bench.methods import get_method

    user: dict[str, Any] = {}
    if yaml_path is not None:
        user.update(load_yaml(yaml_path))
    user.update(dict(parse_override(o) for o in overrides) if isinstance(overrides, list) else overrides)
    cfg = RunConfig()
    method = str(user.get("method", "") or "")
    if method:
        cfg = apply_overrides(cfg, get_method(method).overrides)
    cfg = apply_overrides(cfg, user)
    check(cfg)
    return cfg


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of config keys, got {type(values).__name__}")
    return flatten(values)
