"""Run configuration: one frozen dataclass per concern, resolved from defaults, a method's
preset, an optional YAML file and ``a.b=c`` overrides (in that order, later wins).

Every field is declared with ``knob``: its default, a one-line doc and the values it allows
(fixed ``choices``, numeric bounds). ``xmc-bench run --help-config``, override parsing and
``check`` all read those declarations; rules that tie fields together are ``CROSS_RULES``.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from bench.errors import ConfigError


@dataclass(frozen=True)
class Knob:
    """What a config key means and allows: ``choices`` (fixed values) and bounds, any subset of
    ``low <= x``, ``above < x``, ``x <= high``, ``x < below``."""

    doc: str
    choices: tuple = ()
    low: float | None = None
    above: float | None = None
    high: float | None = None
    below: float | None = None

    def bounds(self) -> str:
        """The bounds in words: ``positive``, ``>= 0``, ``in [0, 1)``; "" when unbounded."""
        lower = ("[", self.low) if self.low is not None else ("(", self.above) if self.above is not None else None
        upper = ("]", self.high) if self.high is not None else (")", self.below) if self.below is not None else None
        if lower and upper:
            return f"in {lower[0]}{lower[1]}, {upper[1]}{upper[0]}"
        if lower:
            return "positive" if lower == ("(", 0) else f"{'>=' if lower[0] == '[' else '>'} {lower[1]}"
        if upper:
            return f"{'<=' if upper[0] == ']' else '<'} {upper[1]}"
        return ""

    def allowed(self) -> str:
        """Choices or bounds in words, for ``--help-config``."""
        return f"one of {' | '.join(self.choices)}" if self.choices else self.bounds()

    def check(self, key: str, value: Any) -> None:
        """Raise ``ConfigError`` naming ``key`` when ``value`` is not allowed (NaN is outside any bounds)."""
        if self.choices and value not in self.choices:
            close = difflib.get_close_matches(str(value), self.choices, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"config key {key!r} must be one of {', '.join(self.choices)}; got {value!r}{hint}")
        inside = ((self.low is None or value >= self.low) and (self.above is None or value > self.above)
                  and (self.high is None or value <= self.high) and (self.below is None or value < self.below))
        if not inside:
            raise ConfigError(f"config key {key!r} must be {self.bounds()}, got {value}")


def knob(default: Any, doc: str, *, choices: tuple = (), low: float | None = None, above: float | None = None,
         high: float | None = None, below: float | None = None) -> Any:
    """A config field with its default, one-line doc and allowed values declared together, e.g.
    ``dropout: float = knob(0.0, "dropout on the encoder output", low=0, below=1)``."""
    return field(default=default, metadata={"knob": Knob(doc, tuple(choices), low, above, high, below)})


ACTIVATIONS = ("relu", "gelu", "tanh", "none")
LOSSES = ("bce", "squared_hinge")  # the names of bench.losses' registry (tests keep them in step)
LOSS_REDUCTIONS = ("sum_over_labels", "mean", "sum")  # bench.losses.REDUCTIONS
CLASSIFIER_DTYPES = ("float32", "bfloat16", "float16")
PRECISIONS = ("fp32", "bf16", "fp16")
# the ranking metrics a run computes (bench.metrics.METRIC_NAMES at k = 1, 3, 5): what eval.select may name
SELECT_METRICS = tuple(f"{name}@{k}" for name in ("P", "nDCG", "PSP", "PSnDCG", "R") for k in (1, 3, 5))


@dataclass(frozen=True)
class DataConfig:
    name: str = knob("synthetic", "dataset; `synthetic` is built in (no download)")
    num_labels: int = knob(4096, "synthetic: size of the label space L", above=0)
    num_train: int = knob(20000, "synthetic: training points", above=0)
    num_test: int = knob(4000, "synthetic: test points", above=0)
    num_features: int = knob(20000, "synthetic: bag-of-words vocabulary size", above=0)
    avg_labels_per_point: float = knob(5.0, "synthetic: mean number of positive labels per point", above=0)
    zipf_exponent: float = knob(1.0, "synthetic: label frequency ~ rank^-exponent")
    seed: int = knob(0, "synthetic: data seed (kept apart from the run seed so seeds vary the model only)")
    path: str = knob("", "real datasets: folder of its files "
                         "(\"\" = $XMC_SHARED_DATA/<folder> or ../shared/data/<folder>)")
    test_fraction: float = knob(0.2, "real datasets without an official split: fraction of points in the seeded "
                                     "test split", above=0, below=1)
    split_seed: int = knob(0, "real datasets without an official split: seed of that test split")
    cache_dir: str = knob("", "Arrow cache of `xmc-bench data prepare` (\"\" = $XMC_CACHE_DIR or "
                              "~/.cache/xmc-dst-bench)")
    title_only: bool = knob(False, "lf datasets: each point's and label's text is its title alone (the reference's "
                                   "'titles' sets); false: title + content")
    label_text_points: bool = knob(False, "lf datasets: add each label's text as a training point labelled with "
                                          "that label alone (the reference's LF training; text encoders only)")


@dataclass(frozen=True)
class ModelConfig:
    classifier: str = knob("dense", "registered classifier name (`xmc-bench list`)")
    encoder: str = knob("bow", "encoder: `bow` (TF-IDF EmbeddingBag) | `transformer` (HF AutoModel from "
                               "model.encoder_path)", choices=("bow", "transformer"))
    embed_dim: int = knob(256, "d: encoder output size = classifier input size (bow; a transformer's is its "
                               "hidden size)", above=0)
    encoder_path: str = knob("", "transformer: local directory of the HF model and its tokenizer "
                                 "(nothing is downloaded)")
    encoder_init: str = knob("pretrained", "transformer: `pretrained` (the directory's weights) | `random` "
                                           "(its config.json only)", choices=("pretrained", "random"))
    pooling: str = knob("mean", "transformer: token pooling, `mean` (over non-padding tokens) | `cls`",
                        choices=("mean", "cls"))
    max_len: int = knob(128, "transformer: tokens per text (longer texts are truncated)", above=0)
    activation: str = knob("relu", "encoder nonlinearity", choices=ACTIVATIONS)
    dropout: float = knob(0.0, "dropout on the encoder output", low=0, below=1)
    fan_in: int = knob(32, "k: inputs per label for fixed fan-in classifiers", above=0)
    density: float = knob(0.0, "masked classifier density; 0 means fan_in / embed_dim (same sparsity as ffi)",
                          low=0, high=1)
    rank: int = knob(0, "dense-bottleneck: rank r of d → r → L (0: chosen to match the memory of ffi with "
                        "match_fan_in)", low=0)
    match_fan_in: int = knob(0, "dense-bottleneck: fan-in k of the ffi layer whose classifier memory r matches "
                                "(0: model.fan_in)", low=0)
    group_size: int = knob(32, "ffi-group: labels per group sharing one set of k inputs", above=0)
    group_order: str = knob("contiguous", "ffi-group: groups of contiguous label ids | cluster (labels renumbered "
                                          "so each group is a label cluster)", choices=("contiguous", "cluster"))
    head_labels: int = knob(0, "head-tail: labels in the dense head, the most frequent (0: chosen by "
                               "head_fraction)", low=0)
    head_fraction: float = knob(0.5, "head-tail: the head is the fewest most frequent labels holding this "
                                     "fraction of training positives")
    tail: str = knob("ffi", "head-tail: the tail layer, ffi | ffi-group (its labels share inputs in groups of "
                            "model.group_size)", choices=("ffi", "ffi-group"))
    label_chunk: int = knob(16384, "labels per slice in streaming top-k inference", above=0)
    bias_init: str = knob("prior", "classifier bias: `prior` (logit of the mean label frequency; BCE only) or "
                                   "`zero` (needed with squared hinge)", choices=("prior", "zero"))
    intermediate: int = knob(0, "size of a dense layer between encoder and classifier (0: none); the classifier "
                                "then takes this size", low=0)
    intermediate_activation: str = knob("relu", "nonlinearity of the intermediate layer", choices=ACTIVATIONS)
    intermediate_dropout: float = knob(0.0, "dropout on the intermediate layer's output", low=0, below=1)
    classifier_dtype: str = knob("float32", "storage dtype of the classifier's parameters (their gradients and "
                                            "optimiser state follow)", choices=CLASSIFIER_DTYPES)


@dataclass(frozen=True)
class DSTConfig:
    regrow: str = knob("none", "none (static connectivity) | random (SET) | gradient (RigL)",
                       choices=("none", "random", "gradient"))
    prune: str = knob("fraction", "fraction: drop the smallest `fraction` of each label's weights | threshold: "
                                  "drop |w| < threshold", choices=("fraction", "threshold"))
    interval: int = knob(25, "rewire every this many optimiser steps", above=0)
    start: float = knob(0.0, "first rewire after this fraction of training", low=0, high=1)
    end: float = knob(0.66, "no rewiring after this fraction of training (the paper: 66 %)", low=0, high=1)
    fraction: float = knob(0.2, "rewired fraction of each label's connections at `start` (prune=fraction)",
                           low=0, high=1)
    threshold: float = knob(0.01, "magnitude threshold at `start` (prune=threshold)", low=0)
    decay: str = knob("cosine", "how fraction/threshold decay from start to end: cosine (to 0; the threshold to "
                                "dst.threshold_floor) | constant", choices=("cosine", "constant"))
    regrow_init: float = knob(0.0, "value of regrown weights (the paper: zero)")
    threshold_floor: float = knob(0.0, "prune=threshold with decay=cosine: the threshold decays to this floor "
                                       "instead of 0 (the reference: 1e-4)", low=0)
    optimizer_state: str = knob("reset", "optimiser state (momentum, Adam moments) of rewired slots: reset (zeroed) "
                                         "| keep (a regrown connection inherits its slot's state: the reference)",
                                choices=("reset", "keep"))


@dataclass(frozen=True)
class AuxConfig:
    scale: float = knob(0.0, "α at the start: weight of the meta-classifier loss in (1 − α)·main + α·meta "
                             "(0: no aux branch)", low=0, high=1)
    cutoff: float = knob(0.5, "when α reaches 0, in aux.cutoff_unit (a fraction: at most 1); after it the branch "
                              "is off (not computed)", above=0)
    cutoff_unit: str = knob("fraction", "unit of aux.cutoff: fraction (of all training steps) | epochs",
                            choices=("fraction", "epochs"))
    schedule: str = knob("cosine", "how α decays from scale to 0 at cutoff: cosine (the paper) | linear | constant",
                         choices=("cosine", "linear", "constant"))
    num_clusters: int = knob(0, "label clusters C the meta-classifier predicts (0: about L / 64, the paper's "
                                "cluster size)", low=0)
    centroids: str = knob("tfidf", "label centroid for clustering: tfidf (mean projected TF-IDF) | encoder "
                                   "(mean encoder feature at init)", choices=("tfidf", "encoder"))
    cluster_dim: int = knob(64, "random projection dimension of the TF-IDF label centroids used for clustering",
                            above=0)
    cluster_iters: int = knob(8, "balanced 2-means rounds per bisection of the label clustering", above=0)
    cache: bool = knob(True, "keep the clustering in the dataset cache (data.cache_dir) and reuse it")
    clusters_file: str = knob("", "a reference label_group*.npy (object array of label-id arrays, one per "
                                  "cluster; pickled: trusted files only) used instead of computing the clusters")
    loss: str = knob("bce", "loss of the meta-classifier's cluster scores, as train.loss", choices=LOSSES)
    loss_reduction: str = knob("sum_over_labels", "its reduction over B·C, as train.loss_reduction (the reference: "
                                                  "mean)", choices=LOSS_REDUCTIONS)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = knob(3, "passes over the training set", low=0)
    max_steps: int = knob(0, "stop after this many optimiser steps (0: no limit)", low=0)
    batch_size: int = knob(256, "training batch size", above=0)
    lr_encoder: float = knob(1e-2, "learning rate of the encoder's optimiser", low=0)
    weight_decay_encoder: float = knob(0.01, "weight decay of the encoder's optimiser", low=0)
    lr_classifier: float = knob(0.5, "learning rate of the classifier's optimiser (BCE summed over labels ÷ B "
                                     "with SGD: larger than the reference's 0.01–0.08)", low=0)
    momentum: float = knob(0.9, "SGD momentum of the classifier (train.optimizer_classifier=sgd)", low=0)
    weight_decay_classifier: float = knob(1e-4, "weight decay of the classifier's optimiser", low=0)
    loss: str = knob("bce", "training loss of label scores z against 0/1 targets y: bce | squared_hinge "
                            "(max(0, 1 − (2y − 1)·z)², the reference's on 5 of 6 datasets)", choices=LOSSES)
    loss_reduction: str = knob("sum_over_labels", "how the loss of the B·L (point, label) terms is reduced: "
                                                  "sum_over_labels (their sum ÷ B) | mean (÷ B·L: the reference's "
                                                  "hinge) | sum (÷ 1: the reference's BCE on LF-AmazonTitles-131K)",
                               choices=LOSS_REDUCTIONS)
    optimizer_classifier: str = knob("sgd", "optimiser of the classifier: sgd (with train.momentum) | adam (L2 "
                                            "decay) | adamw (decoupled decay: the reference's on 5 of 6)",
                                     choices=("sgd", "adam", "adamw"))
    optimizer_encoder: str = knob("adamw", "optimiser of the encoder: adamw | adam (L2 decay)",
                                  choices=("adamw", "adam"))
    no_decay: str = knob("none", "parameters exempt from weight decay: none | encoder (biases and norm weights, "
                                 "i.e. every 1-D parameter, in the encoder's optimiser: the reference) | all (in "
                                 "both optimisers)", choices=("none", "encoder", "all"))
    intermediate_joins: str = knob("encoder", "optimiser the intermediate layer trains in: encoder | classifier",
                                   choices=("encoder", "classifier"))
    lr_intermediate: float = knob(-1.0, "learning rate of the intermediate layer (-1: its optimiser's; the "
                                        "reference: 1e-2)", low=-1)
    weight_decay_intermediate: float = knob(-1.0, "weight decay of the intermediate layer (-1: its optimiser's)",
                                            low=-1)
    aux_joins: str = knob("classifier", "optimiser the aux meta-classifier trains in: classifier | encoder (the "
                                        "reference)", choices=("classifier", "encoder"))
    lr_aux: float = knob(-1.0, "learning rate of the aux meta-classifier (-1: its optimiser's; the reference: "
                               "5e-4)", low=-1)
    weight_decay_aux: float = knob(-1.0, "weight decay of the aux meta-classifier (-1: its optimiser's)", low=-1)
    grad_accum: int = knob(1, "batches whose gradients add up to one optimiser step (the step's loss is that of "
                              "all its points); schedules, max_steps and dst.interval count optimiser steps (the "
                              "reference's counting under accumulation is not known)", above=0)
    warmup_steps: int = knob(20, "linear warm-up steps before the cosine decay", low=0)
    log_every: int = knob(10, "log the training loss every this many steps", above=0)
    threads: int = knob(0, "torch CPU threads (0: torch's default)", low=0)
    device: str = knob("auto", "where to train", choices=("auto", "cpu", "cuda"))
    fused_loss: bool = knob(True, "classifier loss label chunk by label chunk (no [B, L] logits); false: unfused, "
                                  "for comparison")
    precision: str = knob("fp32", "forward and loss precision: fp32 | bf16 (autocast) | fp16 (autocast + "
                                  "GradScaler)", choices=PRECISIONS)
    patience: int = knob(0, "early stopping: stop after this many evaluations without improvement of "
                            "train.patience_metric (0: off; needs eval.every_epoch)", low=0)
    patience_metric: str = knob("", "the metric early stopping watches (\"\": eval.select)",
                                choices=("", *SELECT_METRICS))


@dataclass(frozen=True)
class EvalConfig:
    batch_size: int = knob(1024, "test batch size for streaming top-k evaluation", above=0)
    max_k: int = knob(5, "metrics at k = 1, 3, 5 (those <= max_k)", above=0)
    propensity_a: float = knob(0.0, "Jain et al. propensity A; 0: the dataset card's value (0.55 without a card)")
    propensity_b: float = knob(0.0, "Jain et al. propensity B; 0: the dataset card's value (1.5 without a card)")
    every_epoch: bool = knob(True, "evaluate after every epoch (else only after the last)")
    select: str = knob("P@1", "the metric that picks the record's best epoch (`best`)", choices=SELECT_METRICS)


@dataclass(frozen=True)
class TrackingConfig:
    wandb: str = knob("offline", "W&B mode; the local JSONL record is written regardless",
                      choices=("offline", "online", "disabled"))
    project: str = knob("xmc-dst-bench", "W&B project")
    wandb_dir: str = knob("", "where W&B writes its run folders (\"\" means <results_dir>/wandb)")
    group: str = knob("", "W&B group (the suite sets one per invocation)")


@dataclass(frozen=True)
class CheckpointConfig:
    enabled: bool = knob(True, "write checkpoints at epoch ends (and every `every` steps) and resume from them")
    every: int = knob(0, "also checkpoint every this many optimiser steps (0: at epoch ends only)", low=0)
    keep: int = knob(2, "newest checkpoints kept per configuration (older ones are deleted)", low=1)
    resume: str = knob("auto", "auto: continue from the newest loadable checkpoint of this config | never: start "
                               "afresh (deleting them)", choices=("auto", "never"))


@dataclass(frozen=True)
class RunConfig:
    method: str = knob("", "registered method (preset); its overrides apply before the user's")
    seed: int = knob(0, "run seed: model init, shuffling")
    results_dir: str = knob("results", "where run records (runs.jsonl), logs, W&B folders and rendered tables go")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dst: DSTConfig = field(default_factory=DSTConfig)
    aux: AuxConfig = field(default_factory=AuxConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)


@dataclass(frozen=True)
class Key:
    """One leaf config key: its dotted name, Python type, default and declared ``Knob``."""

    name: str
    type: type
    default: Any
    knob: Knob


def _collect(cls, prefix: str = "") -> dict[str, Key]:
    hints = typing.get_type_hints(cls)
    default = cls()
    out: dict[str, Key] = {}
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            out.update(_collect(hints[f.name], f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = Key(prefix + f.name, hints[f.name], getattr(default, f.name), f.metadata["knob"])
    return out


# Every leaf key, in declaration order (built once at import: sweep threads read it concurrently).
KEYS: dict[str, Key] = _collect(RunConfig)


def describe_keys() -> list[str]:
    """One line per key for ``--help-config``: name, type, default, doc and what it allows."""
    lines = []
    for key in KEYS.values():
        allowed = key.knob.allowed()
        lines.append(f"{key.name:32} {key.type.__name__:5} {key.default!r:>15}  {key.knob.doc}"
                     + (f" [{allowed}]" if allowed else ""))
    return lines


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
    or already-typed values (presets, YAML). Types and choices are checked here, bounds and
    cross-field rules by ``check`` once every source is applied."""
    for name, value in overrides.items():
        name = ALIASES.get(name, name)
        if name not in KEYS:
            close = difflib.get_close_matches(name, list(KEYS), n=3, cutoff=0.6)
            hint = f"; did you mean {' or '.join(close)}?" if close else ""
            raise ConfigError(f"unknown config key {name!r}{hint} (see `xmc-bench run --help-config`)")
        key = KEYS[name]
        value = _coerce(key, value)
        if key.knob.choices:
            key.knob.check(name, value)
        cfg = _replace_path(cfg, name.split("."), value)
    return cfg


def _replace_path(obj, path: list[str], value):
    if len(path) == 1:
        return dataclasses.replace(obj, **{path[0]: value})
    return dataclasses.replace(obj, **{path[0]: _replace_path(getattr(obj, path[0]), path[1:], value)})


def _coerce(key: Key, value: Any) -> Any:
    try:
        if key.type is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if key.type is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.replace("_", ""))
        if key.type is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        type_name = key.type.__name__
        article = "an" if type_name[0] in "aeiou" else "a"
        raise ConfigError(f"config key {key.name!r} expects {article} {type_name}, got {value!r}") from None


def _get(cfg: RunConfig, name: str) -> Any:
    return functools.reduce(getattr, name.split("."), cfg)


# Rules between keys, which no single field's knob can state: each returns what is wrong, or None.

def _something_trains(cfg: RunConfig) -> str | None:
    if cfg.train.epochs == 0 and cfg.train.max_steps == 0:
        return "set train.epochs or train.max_steps: both are 0, so nothing would train"


def _rewiring_window(cfg: RunConfig) -> str | None:
    if cfg.dst.start > cfg.dst.end:
        return (f"config keys 'dst.start' and 'dst.end' must satisfy start <= end, "
                f"got start={cfg.dst.start}, end={cfg.dst.end}")


def _cluster_groups_need_ffi_group(cfg: RunConfig) -> str | None:
    if cfg.model.group_order == "cluster" and cfg.model.classifier != "ffi-group":
        return (f"config key 'model.group_order' is 'cluster', which needs model.classifier=ffi-group, "
                f"got {cfg.model.classifier!r}")


def _aux_cutoff_in_its_unit(cfg: RunConfig) -> str | None:
    if cfg.aux.cutoff_unit == "fraction" and cfg.aux.cutoff > 1.0:
        return f"config key 'aux.cutoff' must be in (0, 1] (a fraction of training), got {cfg.aux.cutoff}"


def _prior_bias_needs_bce(cfg: RunConfig) -> str | None:
    # the prior is a BCE logit; a hinge-trained layer (or aux branch, when on) starts at zero
    used = ["train.loss"] + (["aux.loss"] if cfg.aux.scale > 0 else [])
    other = [key for key in used if _get(cfg, key) != "bce"]
    if cfg.model.bias_init == "prior" and other:
        return (f"config key 'model.bias_init' is 'prior' (the logit of the label frequency, a BCE start), but "
                f"{other[0]}={_get(cfg, other[0])}: set model.bias_init=zero")


def _inherit_or_value(cfg: RunConfig) -> str | None:
    for name in ("train.lr_intermediate", "train.weight_decay_intermediate", "train.lr_aux", "train.weight_decay_aux"):
        if -1 < _get(cfg, name) < 0:
            return f"config key {name!r} must be -1 (the optimiser's own) or >= 0, got {_get(cfg, name)}"


def _threshold_floor_below_threshold(cfg: RunConfig) -> str | None:
    if cfg.dst.prune == "threshold" and cfg.dst.threshold_floor > cfg.dst.threshold:
        return (f"config key 'dst.threshold_floor' must not exceed dst.threshold (it decays from the threshold "
                f"to the floor), got {cfg.dst.threshold_floor} > {cfg.dst.threshold}")


def _metric_within_max_k(cfg: RunConfig) -> str | None:
    for name, metric in (("eval.select", cfg.eval.select), ("train.patience_metric", cfg.train.patience_metric)):
        if metric and int(metric.split("@")[1]) > cfg.eval.max_k:
            return (f"config key {name!r} is {metric!r}, which the run does not compute: eval.max_k is "
                    f"{cfg.eval.max_k}")


def _patience_needs_every_epoch(cfg: RunConfig) -> str | None:
    if cfg.train.patience > 0 and not cfg.eval.every_epoch:
        return (f"config key 'train.patience' is {cfg.train.patience}, which needs eval.every_epoch=true "
                f"(early stopping counts evaluations), got eval.every_epoch=false")


def _fp16_storage_under_fp16(cfg: RunConfig) -> str | None:
    if cfg.train.precision == "fp16" and cfg.model.classifier_dtype == "float16":
        return ("config key 'model.classifier_dtype' is float16, which train.precision=fp16 cannot train: its "
                "GradScaler cannot unscale float16 gradients; use model.classifier_dtype=bfloat16 or float32")


def _label_points_need_texts(cfg: RunConfig) -> str | None:
    if cfg.data.label_text_points and cfg.model.encoder != "transformer":
        return ("config key 'data.label_text_points' adds label texts as training points, which have no "
                f"bag-of-words features: it needs model.encoder=transformer, got {cfg.model.encoder!r}")


def _clusters_file_keeps_label_ids(cfg: RunConfig) -> str | None:
    if cfg.aux.clusters_file and cfg.model.group_order == "cluster":
        return ("config key 'aux.clusters_file' holds the dataset's own label ids, which model.group_order=cluster "
                "renumbers: use one of them")


CROSS_RULES: tuple[Callable[[RunConfig], str | None], ...] = (
    _something_trains, _rewiring_window, _cluster_groups_need_ffi_group, _aux_cutoff_in_its_unit,
    _metric_within_max_k, _patience_needs_every_epoch, _fp16_storage_under_fp16,
    _label_points_need_texts, _clusters_file_keeps_label_ids,
    _prior_bias_needs_bce, _inherit_or_value, _threshold_floor_below_threshold)


def check(cfg: RunConfig) -> None:
    """Reject impossible configs before anything runs, naming the key: every key's own knob,
    then ``CROSS_RULES``."""
    for name, key in KEYS.items():
        key.knob.check(name, _get(cfg, name))
    for rule in CROSS_RULES:
        problem = rule(cfg)
        if problem:
            raise ConfigError(problem)


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"config file {path} is not UTF-8 text ({err.reason} at byte {err.start}): "
                          "expected a YAML file of config keys") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of config keys, got {type(values).__name__}")
    return flatten(values)
