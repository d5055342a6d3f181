"""`xmc-bench kernels`: the fixed fan-in op against its peers, timed in one process.

Layers, all ``[B, d] → [B, L]`` without bias, float32 unless asked otherwise:

- ``dense``      ``nn.Linear``'s math (``F.linear``), the baseline: 2·B·L·d FLOPs per pass;
- ``masked``     a dense weight with a random mask of density k/d applied to its gradient
                 (how most DST code simulates sparsity): dense FLOPs and memory;
- ``csr``        the same connectivity as a torch CSR tensor: ``torch.sparse.mm`` forward,
                 ``torch.sparse.mm`` with the transposed pattern for the input gradient and
                 ``torch.sparse.sampled_addmm`` for the weight gradient: 2·B·L·k FLOPs per pass;
- ``ffi/<name>`` ``fixed_fan_in`` on each backend that can run on the device: 2·B·L·k;
- ``ffi-group/g<g>`` ``group_fan_in``: groups of g labels share their k inputs (g ∈ GROUP_SIZES): 2·B·L·k.

"fwd+bwd" is the forward and both gradients (input and weights), three passes. Times are the
median of ``repeats`` runs after ``warmup`` runs, the layers of one configuration run
round-robin (interleaved) so that a machine whose speed drifts slows them all alike; GFLOP/s
counts the FLOPs each layer does (dense FLOPs for masked); "× dense" is the dense time over the
layer's time (higher: faster), dense timed in the same round-robin. Layers that do not fit in
``--max-gb`` together are timed in several groups, each with dense beside it where both fit (a
record's ``baseline`` says "interleaved"; where not, "separate": the ratio uses dense's times
from the first group); a layer that alone exceeds ``--max-gb`` is skipped with a note.

``--step`` (``run_steps``) times full training steps instead — loss over sparse targets, every
gradient, SGD-momentum update — of dense and the layers with the loss fused into their kernels
(``bench.kernels.fused_loss``), round-robin in the same way.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from bench.kernels import fixed_fan_in, list_backends, ops
from bench.measure import cpu_model, git_commit
from bench.record import append_record


# the pure-torch reference is an oracle, not a contender (seconds per pass at L = 131072): opt in
DEFAULT_LAYERS = ("dense", "masked", "csr", "ffi/cpu", "ffi/triton", "ffi-group")
GROUP_SIZES = (8, 32, 128)  # ffi-group rows


@dataclass
class Timing:
    layer: str
    B: int
    d: int
    L: int
    k: int
    dtype: str
    threads: int
    fwd_ms: float | None = None
    fwdbwd_ms: float | None = None
    gflops_fwd: float | None = None
    gflops_fwdbwd: float | None = None
    vs_dense_fwd: float | None = None
    vs_dense_fwdbwd: float | None = None
    # dense timed in the same round-robin, or (where both would not fit in memory) in its own
    baseline: str = ""
    skipped: str = ""


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


class _CSRLayer(torch.autograd.Function):
    """``x [B, d] → [B, L]`` through a CSR weight of fixed pattern; gradients for x and values."""

    @staticmethod
    def forward(ctx, x, values, pattern):
        crow, col, size, perm, crow_t, col_t = pattern
        ctx.save_for_backward(x, values)
        ctx.pattern = pattern
        weight = torch.sparse_csr_tensor(crow, col, values, size)
        return torch.sparse.mm(weight, x.t()).t()  # [B, L]

    @staticmethod
    def backward(ctx, grad):
        x, values = ctx.saved_tensors
        crow, col, size, perm, crow_t, col_t = ctx.pattern
        # W^T as CSR ([d, L]): same values, permuted once per step (the pattern is precomputed)
        weight_t = torch.sparse_csr_tensor(crow_t, col_t, values[perm], (size[1], size[0]))
        grad_x = torch.sparse.mm(weight_t, grad.t()).t()  # [B, d]
        zero = torch.sparse_csr_tensor(crow, col, torch.zeros_like(values), size)
        grad_w = torch.sparse.sampled_addmm(zero, grad.t().contiguous(), x, beta=0.0)  # (g^T x) on the pattern
        return grad_x, grad_w.values(), None


def _csr_pattern(indices: torch.Tensor, in_features: int):
    """Row pointers and column ids of the ``[L, d]`` CSR weight, and of its transpose ``[d, L]``
    with the permutation that reorders the values (computed once: the pattern is fixed)."""
    num_labels, k = indices.shape
    device = indices.device
    crow = torch.arange(0, num_labels * k + 1, k, device=device)
    col = indices.reshape(-1).long()
    perm = torch.sort(col, stable=True).indices  # by input id, then by label
    crow_t = torch.zeros(in_features + 1, dtype=torch.int64, device=device)
    crow_t[1:] = torch.bincount(col, minlength=in_features).cumsum(0)
    rows = torch.arange(num_labels, device=device).repeat_interleave(k)
    return crow, col, (num_labels, in_features), perm, crow_t, rows[perm]


def memory_parts(layer: str, B: int, d: int, L: int, k: int, elem: int) -> tuple[int, int, int]:
    """Bytes a layer needs while timed: (shared by every layer: input, its gradient and the
    ``[B, L]`` output gradient; held between its calls: parameters, their gradients, index
    structures; alive only during a call: its ``[B, L]`` output and temporaries)."""
    shared = B * L * elem + 2 * B * d * elem
    out = B * L * elem
    if layer in ("dense", "masked"):
        if layer == "masked":  # bool mask; the masked gradient is a temporary [L, d]
            return shared, 2 * L * d * elem + L * d, out + L * d * elem
        return shared, 2 * L * d * elem, out
    if layer == "csr":
        return shared, L * k * (2 * elem + 4 * 8), out  # values, grads, int64 column ids and permutations
    return shared, L * k * (2 * elem + 4), out  # values, grads, ids


def _layers(x, d, L, k, dtype, device, backends):
    """name → (make: () -> (forward fn, parameters needing grad))."""
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.rand(L, k, generator=g).mul_(d).long().clamp_(max=d - 1)  # ids may repeat: timing only
    from bench.classifiers.fixed_fan_in import random_fan_in_indices

    if L * d <= (1 << 28):  # distinct ids when cheap to draw; timing does not depend on it
        ids = random_fan_in_indices(L, d, k, g).long()
    index_dtype = torch.int16 if d < 32768 else torch.int32
    ids = ids.sort(dim=1).values.to(device)  # CSR wants column ids sorted within a row

    def dense():
        weight = (torch.randn(L, d, device=device, dtype=dtype) * d ** -0.5).requires_grad_()
        return (lambda inp: F.linear(inp, weight)), [weight]

    def masked():
        mask = torch.rand(L, d, device=device) < k / d
        weight = (torch.randn(L, d, device=device, dtype=dtype) * mask).requires_grad_()

        def run(inp):
            w = weight[:]
            if w.requires_grad:
                w.register_hook(lambda grad: grad * mask)
            return F.linear(inp, w)
        return run, [weight]

    def csr():
        values = torch.randn(L * k, device=device, dtype=dtype).requires_grad_()
        pattern = _csr_pattern(ids, d)
        return (lambda inp: _CSRLayer.apply(inp, values, pattern)), [values]

    def ffi(name):
        def make():
            values = torch.randn(L, k, device=device, dtype=dtype).requires_grad_()
            idx = ids.to(index_dtype)
            return (lambda inp: fixed_fan_in(inp, values, idx, backend=name)), [values]
        return make

    def group(size):
        def make():
            from bench.kernels.group_fan_in import group_fan_in

            values = torch.randn(L, k, device=device, dtype=dtype).requires_grad_()
            group_ids = ids[:: size].to(index_dtype)  # [ceil(L / g), k]: one row of ids per group
            return (lambda inp: group_fan_in(inp, values, group_ids, size)), [values]
        return make

    out = {"dense": dense, "masked": masked, "csr": csr}
    for name in backends:
        out[f"ffi/{name}"] = ffi(name)
    for size in GROUP_SIZES:
        out[f"ffi-group/g{size}"] = group(size)
    return out


def _interleaved_ms(contenders: dict, device, warmup: int, repeats: int) -> dict[str, float]:
    """Median milliseconds of each ``name → fn``, run round-robin: on a shared machine whose
    speed drifts over seconds, every contender sees the same drift (timed one after another, a
    slow spell lands on one layer and skews its ratio against dense)."""
    samples = {name: [] for name in contenders}
    for r in range(warmup + repeats):
        for name, fn in contenders.items():
            _sync(device)
            start = time.perf_counter()
            fn()
            _sync(device)
            if r >= warmup:
                samples[name].append(time.perf_counter() - start)
    return {name: 1000 * statistics.median(ts) for name, ts in samples.items()}


def _groups(names: list[str], parts: dict[str, tuple[int, int, int]], max_bytes: float) -> list[list[str]]:
    """Layers timed together (interleaved) whose memory fits in ``max_bytes`` at once (the shared
    buffers once, every layer's held memory, the largest per-call memory): groups around
    ``dense`` first, each taking, in order, every layer that still fits beside it, so each ratio
    has a baseline timed beside it where memory allows; then what cannot sit beside dense."""
    baseline = "dense" if "dense" in names else None
    rest = [n for n in names if n != baseline]

    def fits(group):
        return (max(parts[n][0] for n in group) + sum(parts[n][1] for n in group)
                + max(parts[n][2] for n in group)) <= max_bytes

    groups = []
    while baseline and rest:
        group = [baseline]
        for name in list(rest):
            if fits(group + [name]):
                group.append(name)
                rest.remove(name)
        if len(group) == 1:
            break
        groups.append(group)
    if baseline and not groups:
        groups.append([baseline])
    current = []
    for name in rest:
        if current and not fits(current + [name]):
            groups.append(current)
            current = []
        current.append(name)
    if current:
        groups.append(current)
    return groups


def run_kernels(batch=256, dim=768, fan_ins=(16, 32, 64), labels=(16384, 131072, 1048576),
                dtype="float32", device="cpu", warmup=1, repeats=5, max_gb=None, layers=None,
                out_dir="results/kernels", log=print) -> list[Timing]:
    """Time every selected layer on the grid. Layers of one configuration run interleaved, in
    groups that fit in ``max_gb`` together, each group with ``dense`` beside it as the baseline
    of its ratios; a layer that alone exceeds ``max_gb`` is skipped with a note."""
    device = torch.device(device)
    dt = getattr(torch, dtype)
    elem = torch.tensor([], dtype=dt).element_size()
    if max_gb is None:
        max_gb = 0.6 * _available_gb(device)
    probe = torch.empty(1, dtype=dt, device=device)
    backends = [n for n in list_backends() if ops._BACKENDS[n].available(probe)]
    threads = torch.get_num_threads()
    env = {"torch": torch.__version__, "device": str(device), "cpu": cpu_model(), "git_commit": git_commit(),
           "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else "", "timing": "interleaved"}
    results = []
    for L in labels:
        for k in fan_ins:
            x = torch.randn(batch, dim, device=device, dtype=dt)
            grad = torch.randn(batch, L, device=device, dtype=dt)
            makers = {name: make for name, make in _layers(x, dim, L, k, dt, device, backends).items()
                      if any(name == w or name.startswith(w + "/") for w in (layers or DEFAULT_LAYERS))}
            parts = {name: memory_parts(name.split("/")[0], batch, dim, L, k, elem) for name in makers}
            need = {name: sum(parts[name]) / 2**30 for name in makers}
            rows = {name: Timing(name, batch, dim, L, k, dtype, threads) for name in makers}
            for name in makers:
                if need[name] > max_gb:
                    rows[name].skipped = f"needs ~{need[name]:.1f} GB > --max-gb {max_gb:.1f}"
            fitting = [name for name in makers if not rows[name].skipped]
            dense_ms = None  # (fwd, fwd+bwd) of dense, for groups that cannot hold it beside them
            # groups with dense come first: one without it takes the first group's dense times
            for group in _groups(fitting, parts, max_gb * 2**30):
                forward, forward_backward = {}, {}
                for name in group:
                    fwd_fn, params = makers[name]()
                    xin = x.clone().requires_grad_()

                    def fwd(fwd_fn=fwd_fn):
                        with torch.no_grad():
                            fwd_fn(x)

                    def fwd_bwd(fwd_fn=fwd_fn, params=params, xin=xin):
                        for p in params:
                            p.grad = None
                        xin.grad = None
                        fwd_fn(xin).backward(grad)
                    forward[name], forward_backward[name] = fwd, fwd_bwd
                fwd_ms = _interleaved_ms(forward, device, warmup, repeats)
                fwdbwd_ms = _interleaved_ms(forward_backward, device, warmup, repeats)
                del forward, forward_backward
                dense = (fwd_ms["dense"], fwdbwd_ms["dense"]) if "dense" in group else dense_ms
                dense_ms = dense_ms or dense
                for name in group:
                    row = rows[name]
                    if row.fwd_ms is not None:  # dense, already timed with an earlier group
                        continue
                    row.fwd_ms, row.fwdbwd_ms = fwd_ms[name], fwdbwd_ms[name]
                    flops = 2 * batch * L * (dim if name in ("dense", "masked") else k)
                    row.gflops_fwd = flops / row.fwd_ms / 1e6
                    row.gflops_fwdbwd = 3 * flops / row.fwdbwd_ms / 1e6
                    if dense:
                        row.vs_dense_fwd = dense[0] / row.fwd_ms
                        row.vs_dense_fwdbwd = dense[1] / row.fwdbwd_ms
                        row.baseline = "interleaved" if "dense" in group else "separate"
            for name in makers:  # in the grid's order, once each
                row = rows[name]
                results.append(row)
                log(format_row(row))
                append_record(Path(out_dir) / "kernels.jsonl", {**asdict(row), "env": env,
                                                                  "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return results


def _available_gb(device: torch.device | str = "cpu") -> float:
    """GiB free for the layers: the device's free memory on CUDA, MemAvailable on CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0] / 2**30
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 8.0


HEADER = (f"| {'layer':14} | {'L':>8} | {'k':>3} | {'fwd ms':>9} | {'GFLOP/s':>7} | {'× dense':>7} "
          f"| {'fwd+bwd ms':>10} | {'GFLOP/s':>7} | {'× dense':>7} |")


def _f(value, spec):
    return format(value, spec) if value is not None else "—"


def format_row(r: Timing) -> str:
    if r.skipped:
        return f"| {r.layer:14} | {r.L:>8} | {r.k:>3} | skipped: {r.skipped} |"
    return (f"| {r.layer:14} | {r.L:>8} | {r.k:>3} | {_f(r.fwd_ms, '9.1f')} | {_f(r.gflops_fwd, '7.1f')} "
            f"| {_f(r.vs_dense_fwd, '7.2f')} | {_f(r.fwdbwd_ms, '10.1f')} | {_f(r.gflops_fwdbwd, '7.1f')} "
            f"| {_f(r.vs_dense_fwdbwd, '7.2f')} |")


# --- top-k: selection time against scoring time ------------------------------------------------

TOPK_LAYERS = ("dense", "ffi", "ffi/torch", "ffi-group")
TOPK_GROUP_SIZE = 32  # the ffi-group row's g


@dataclass
class TopkTiming:
    """One row of the top-k table: ``topk_ms`` is the layer's ``topk``; ``score_ms`` computes
    every label's score the way that top-k does and keeps none (torch path: ``logits`` label
    chunk by label chunk; compiled ffi path: the same sweep of ``csrc/select.c`` with nothing
    selected, no scores written); ``select_ms`` is their difference, the price of keeping the
    best ``topk`` labels, and ``select_vs_score`` its ratio to the scoring."""

    layer: str
    path: str  # "torch" (per-chunk torch.topk merged with the running best) or "compiled" (csrc/select.c)
    B: int
    d: int
    L: int
    k: int  # the layer's fan-in (dense: d)
    topk: int
    dtype: str
    threads: int
    score_ms: float | None = None
    topk_ms: float | None = None
    select_ms: float | None = None
    select_vs_score: float | None = None
    table: str = "topk"


def _topk_classifiers(d: int, L: int, fan_in: int, k: int, wanted, device: torch.device, dtype: torch.dtype) -> dict:
    """name → (its top-k function, its scoring alone, the top-k path) for each wanted layer. The
    kernel paths: "compiled" (``csrc/select.c``, whose baseline is its own sweep keeping nothing)
    and "triton" (CUDA; baseline: the label chunks' scores as the torch path computes them)."""
    from bench.classifiers import create_classifier
    from bench.classifiers.base import Classifier
    from bench.classifiers.fixed_fan_in import topk_kernel
    from bench.kernels import cpu_select

    def chunked(clf):
        def score(x):
            for lo in range(0, clf.num_labels, clf.label_chunk):
                clf.logits(x, lo, min(lo + clf.label_chunk, clf.num_labels))
        return score

    def build(name, **options):
        return create_classifier(name, d, L, **options).to(device=device, dtype=dtype)

    def kernel_path(clf, score_only):
        path = topk_kernel(h, clf.values, clf.bias, getattr(clf, "group_size", 1), k)
        return clf.topk, score_only if path == "compiled" else chunked(clf), path or "torch"

    h, out = torch.empty(1, d, device=device, dtype=dtype), {}
    if "dense" in wanted:
        dense = build("dense")
        out["dense"] = (dense.topk, chunked(dense), "torch")
    if "ffi" in wanted or "ffi/torch" in wanted:
        ffi = build("ffi", fan_in=fan_in)
        out["ffi"] = kernel_path(ffi, lambda x: cpu_select.ffi_score_only(x, ffi.values, ffi.indices, ffi.bias))
        out["ffi/torch"] = (lambda x, k: Classifier.topk(ffi, x, k), chunked(ffi), "torch")
    if "ffi-group" in wanted:
        group = build("ffi-group", fan_in=fan_in, group_size=TOPK_GROUP_SIZE)
        out["ffi-group"] = kernel_path(group, lambda x: cpu_select.group_score_only(
            x, group.values, group.group_indices, group.group_size, group.bias))
    return {name: made for name, made in out.items() if name in wanted}


def run_topk(batch=1024, dim=256, labels=(262144,), fan_in=32, k=5, warmup=1, repeats=5, layers=None,
             device="cpu", dtype="float32", out_dir="results/kernels", log=print) -> list[TopkTiming]:
    """Time scoring alone and ``topk`` of each layer at every L, all round-robin in one process,
    so that the ratios are side by side; rows go to ``kernels.jsonl`` with ``table: "topk"``."""
    unknown = set(layers or ()) - set(TOPK_LAYERS)
    if unknown:
        raise ValueError(f"top-k table layers are {', '.join(TOPK_LAYERS)}; got {', '.join(sorted(unknown))}")
    device, dt = torch.device(device), getattr(torch, dtype)
    threads = torch.get_num_threads()
    env = {"torch": torch.__version__, "device": device.type, "cpu": cpu_model(), "git_commit": git_commit(),
           "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else "", "timing": "interleaved"}
    results = []
    for L in labels:
        x = torch.randn(batch, dim, device=device, dtype=dt)
        made = _topk_classifiers(dim, L, fan_in, k, set(layers or TOPK_LAYERS), device, dt)
        contenders = {}
        for name, (topk, score, _) in made.items():
            contenders[f"{name}:score"] = lambda score=score: score(x)
            contenders[f"{name}:topk"] = lambda topk=topk: topk(x, k)
        with torch.no_grad():
            ms = _interleaved_ms(contenders, device, warmup, repeats)
        for name, (_, _, path) in made.items():
            row = TopkTiming(name, path, batch, dim, L, dim if name == "dense" else fan_in, k, dtype, threads,
                             ms[f"{name}:score"], ms[f"{name}:topk"])
            row.select_ms = row.topk_ms - row.score_ms
            row.select_vs_score = row.select_ms / row.score_ms
            results.append(row)
            log(format_topk_row(row))
            append_record(Path(out_dir) / "kernels.jsonl", {**asdict(row), "env": env,
                                                              "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
        del made, contenders
    return results


TOPK_HEADER = (f"| {'layer':10} | {'top-k path':10} | {'L':>8} | {'fan-in':>6} | {'B':>5} | {'top':>3} "
               f"| {'score ms':>9} | {'top-k ms':>9} | {'select ms':>9} | {'select ÷ score':>14} |")


def format_topk_row(r: TopkTiming) -> str:
    return (f"| {r.layer:10} | {r.path:10} | {r.L:>8} | {r.k:>6} | {r.B:>5} | {r.topk:>3} | {_f(r.score_ms, '9.1f')} "
            f"| {_f(r.topk_ms, '9.1f')} | {_f(r.select_ms, '9.1f')} | {_f(r.select_vs_score, '14.2f')} |")


# --- the full-step table (--step) --------------------------------------------------------------
#
# A classifier's training step: loss over [B, L] against sparse targets, every gradient (input,
# weights, bias), then an SGD-momentum update. ``dense`` (nn.Linear's weight and bias) computes the
# loss the fastest plain-torch way, chunk by chunk (scores of a label chunk by one GEMM, torch's
# fused loss op on them, the gradient chunk by two more GEMMs); ``ffi/cpu`` and
# ``ffi-group/g<g>`` run the fused kernel steps (``bench.kernels.fused_loss``); ``ffi/cpu-torchloss``
# is the ffi kernels with the loss in torch between them, the path the fused step replaces.

STEP_LAYERS = {"cpu": ("dense", "ffi/cpu", "ffi/cpu-torchloss", "ffi-group/g32"),
               "cuda": ("dense", "ffi/triton", "ffi/triton-torchloss", "ffi-group/g32")}
STEP_CHUNK = 16384  # labels per chunk of the torch losses (the classifiers' label chunk)
STEP_LABELS_PER_ROW = 5  # positives per batch row of the timed targets


@dataclass
class StepTiming:
    layer: str
    B: int
    d: int
    L: int
    k: int
    dtype: str
    threads: int
    loss: str
    step_ms: float | None = None
    vs_dense: float | None = None
    table: str = "step"
    skipped: str = ""


def _torch_loss_chunk(z, targets, lo, hi, loss, scale, y_buf):
    """(Σ loss, scale · ∂loss/∂z) of a chunk's scores ``z [B, hi − lo]`` in torch, the targets
    set into the zeroed ``y_buf`` and cleared again."""
    rows, ids = targets
    keep = (ids >= lo) & (ids < hi)
    y = y_buf[:, : hi - lo]
    y[rows[keep], ids[keep] - lo] = 1
    if loss == "bce":
        value = F.binary_cross_entropy_with_logits(z, y, reduction="sum")
        grad = torch.sigmoid(z).sub_(y).mul_(scale)
    else:
        sign = y.mul(2).sub_(1)
        margin = (1 - sign * z).clamp_(min=0)
        value = margin.square().sum()
        grad = margin.mul_(sign).mul_(-2 * scale)
    y[rows[keep], ids[keep] - lo] = 0
    return value, grad


def _layer_grads(op, grad, x, values, ids, d):
    """(grad_x, grad_values) of a fixed fan-in backend ``op`` from one chunk's ``grad``."""
    if op.grads is not None:
        return op.grads(grad, x, values, ids, True, True)
    return op.grad_input(grad, values, ids, d), op.grad_values(grad, x, ids)


def _step_layers(x, d, L, k, dtype, loss, scale, targets, sparse_targets):
    """name → make: () -> (step fn computing loss + all gradients into .grad, parameters), on
    ``x``'s device: the fan-in layers' kernels are ``cpu`` (compiled C) on CPU, ``triton`` on CUDA."""
    from bench.classifiers.fixed_fan_in import random_fan_in_indices
    from bench.kernels import fused_loss

    device = x.device
    kernels = "cpu" if device.type == "cpu" else "triton"
    g = torch.Generator().manual_seed(0)
    index_dtype = torch.int16 if d < 32768 else torch.int32
    ids = random_fan_in_indices(L, d, k, g).to(index_dtype) if L * d <= (1 << 28) else \
        torch.rand(L, k, generator=g).mul_(d).to(index_dtype).clamp_(max=d - 1)
    ids = ids.to(device)
    y_buf = torch.zeros(x.shape[0], STEP_CHUNK, device=device)

    def dense():
        weight = torch.nn.Parameter(torch.randn(L, d, dtype=dtype, device=device) * d ** -0.5)
        bias = torch.nn.Parameter(torch.zeros(L, dtype=dtype, device=device))

        def step(xin):
            gw, gb = torch.empty_like(weight), torch.empty_like(bias)
            gx = torch.zeros_like(xin)
            total = 0.0
            for lo in range(0, L, STEP_CHUNK):
                hi = min(lo + STEP_CHUNK, L)
                w = weight.detach()[lo:hi]
                z = torch.addmm(bias.detach()[lo:hi], xin.detach(), w.t())  # [B, Lc]
                value, grad = _torch_loss_chunk(z, targets, lo, hi, loss, scale, y_buf)
                total += value.item()
                torch.mm(grad.t(), xin.detach(), out=gw[lo:hi])
                torch.sum(grad, 0, out=gb[lo:hi])
                gx.addmm_(grad, w)
            weight.grad, bias.grad, xin.grad = gw, gb, gx
            return total * scale
        return step, [weight, bias]

    def ffi_values():
        values = torch.nn.Parameter(torch.randn(L, k, dtype=dtype, device=device) * k ** -0.5)
        return values, torch.nn.Parameter(torch.zeros(L, dtype=dtype, device=device))

    def ffi_fused():
        values, bias = ffi_values()

        def step(xin):
            total = fused_loss.ffi_loss(xin, values, ids, bias, sparse_targets, loss, scale)
            total.backward()
            return total.item()
        return step, [values, bias]

    def ffi_torch_loss():
        values, bias = ffi_values()
        op = ops.get_backend(kernels)

        def step(xin):
            gv, gb = torch.empty_like(values), torch.empty_like(bias)
            gx = torch.zeros_like(xin)
            total = 0.0
            for lo in range(0, L, STEP_CHUNK):
                hi = min(lo + STEP_CHUNK, L)
                z = op.forward(xin.detach(), values.detach()[lo:hi], ids[lo:hi]) + bias.detach()[lo:hi]
                value, grad = _torch_loss_chunk(z, targets, lo, hi, loss, scale, y_buf)
                total += value.item()
                cx, cv = _layer_grads(op, grad, xin.detach(), values.detach()[lo:hi], ids[lo:hi], d)
                gx += cx
                gv[lo:hi] = cv
                torch.sum(grad, 0, out=gb[lo:hi])
            values.grad, bias.grad, xin.grad = gv, gb, gx
            return total * scale
        return step, [values, bias]

    def group(size):
        def make():
            values, bias = ffi_values()
            group_ids = ids[::size].contiguous()  # [ceil(L / g), k]

            def step(xin):
                total = fused_loss.group_loss(xin, values, group_ids, size, bias, sparse_targets, loss, scale)
                total.backward()
                return total.item()
            return step, [values, bias]
        return make

    out = {"dense": dense, f"ffi/{kernels}": ffi_fused, f"ffi/{kernels}-torchloss": ffi_torch_loss}
    for size in GROUP_SIZES:
        out[f"ffi-group/g{size}"] = group(size)
    return out


def run_steps(batch=256, dim=768, fan_ins=(32,), labels=(131072,), dtype="float32", loss="bce",
              reduction="sum_over_labels", warmup=1, repeats=5, max_gb=None, layers=None, device="cpu",
              out_dir="results/kernels", log=print) -> list[StepTiming]:
    """Time full training steps (loss + backward + SGD-momentum update) of each layer, round-robin
    with ``dense``; ``× dense`` is dense's step time over the layer's. On CUDA the fan-in layers
    run the Triton kernels (``ffi/triton``, ``ffi/triton-torchloss``, ``ffi-group/g32``)."""
    from bench.kernels import cpu, cpu_group, fused_loss
    from bench.sparse import SparseTargets

    device = torch.device(device)
    dt = getattr(torch, dtype)
    elem = torch.tensor([], dtype=dt).element_size()
    if max_gb is None:
        max_gb = 0.6 * _available_gb(device)
    threads = torch.get_num_threads()
    env = {"torch": torch.__version__, "device": device.type, "cpu": cpu_model(), "git_commit": git_commit(),
           "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else "",
           "timing": "interleaved", "reduction": reduction, "labels_per_row": STEP_LABELS_PER_ROW,
           "compiled": cpu.library() is not None and cpu_group.library() is not None}
    wanted = layers or STEP_LAYERS[device.type]
    results = []
    for L in labels:
        for k in fan_ins:
            g = torch.Generator().manual_seed(1)
            x = torch.randn(batch, dim, generator=g).to(device=device, dtype=dt)
            ids = torch.stack([torch.randperm(L, generator=g)[:STEP_LABELS_PER_ROW].sort().values
                               for _ in range(batch)]).reshape(-1).to(device)
            indptr = torch.arange(0, batch * STEP_LABELS_PER_ROW + 1, STEP_LABELS_PER_ROW, device=device)
            sparse = SparseTargets(indptr, ids, L)
            targets = (torch.arange(batch, device=device).repeat_interleave(STEP_LABELS_PER_ROW), ids)
            scale = fused_loss.scale_for(reduction, batch, L)
            makers = {n: m for n, m in _step_layers(x, dim, L, k, dt, loss, scale, targets, sparse).items()
                      if any(n == w or n.startswith(w + "/") for w in wanted)}
            rows = {n: StepTiming(n, batch, dim, L, k, dtype, threads, loss) for n in makers}
            # held: parameters, gradients, momentum (3×); dense also [B, chunk] temporaries
            need = {n: 3 * L * (dim if n == "dense" else k + 1) * elem / 2**30 for n in makers}
            for n in makers:
                if need[n] > max_gb:
                    rows[n].skipped = f"needs ~{need[n]:.1f} GB > --max-gb {max_gb:.1f}"
            steps = {}
            for n in makers:
                if rows[n].skipped:
                    continue
                fn, params = makers[n]()
                opt = torch.optim.SGD(params, lr=0.01, momentum=0.9)
                xin = x.clone().requires_grad_()

                def step(fn=fn, params=params, opt=opt, xin=xin):
                    for p in params:
                        p.grad = None
                    xin.grad = None
                    fn(xin)
                    opt.step()
                steps[n] = step
            ms = _interleaved_ms(steps, device, warmup, repeats) if steps else {}
            del steps
            for n in makers:
                row = rows[n]
                if n in ms:
                    row.step_ms = ms[n]
                    if "dense" in ms:
                        row.vs_dense = ms["dense"] / ms[n]
                results.append(row)
                log(format_step_row(row))
                append_record(Path(out_dir) / "kernels.jsonl", {**asdict(row), "env": env,
                                                                  "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
    return results


STEP_HEADER = f"| {'layer':18} | {'loss':13} | {'d':>5} | {'L':>8} | {'k':>3} | {'step ms':>9} | {'× dense':>7} |"


def format_step_row(r: StepTiming) -> str:
    if r.skipped:
        return f"| {r.layer:18} | {r.loss:13} | {r.d:>5} | {r.L:>8} | {r.k:>3} | skipped: {r.skipped} |"
    return (f"| {r.layer:18} | {r.loss:13} | {r.d:>5} | {r.L:>8} | {r.k:>3} | {_f(r.step_ms, '9.1f')} "
            f"| {_f(r.vs_dense, '7.2f')} |")
