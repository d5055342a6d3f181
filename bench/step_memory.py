"""Peak memory of full training steps of an output layer alone, against its analytic state.

One step = loss (fused label-chunked or unfused ``[B, L]`` logits), backward (value and input
gradients), SGD with momentum. The classifier's analytic state is what it must hold:
parameters + gradients + one momentum slot + indices (``memory_bytes(optimizer_slots=1)``).
Everything beyond it is transient working memory: ``[B, chunk]`` logits and their gradient
when fused, ``[B, L]`` logits, probabilities and gradient when not.

Each configuration runs in a fresh Python process (``python -m bench.step_memory``), because
on CPU the only honest peak is the process's own high-water mark (``ru_maxrss``). Inputs and
targets are made before the baseline is taken, so ``peak − baseline`` is the classifier's
share: its state plus the step's working memory (an upper bound: anything the interpreter
touched after the baseline counts too).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import torch

LAYERS = ("ffi", "dense")


def measure_step(layer: str, num_labels: int, fan_in: int, dim: int, batch: int, fused: bool,
                 steps: int = 2, labels_per_point: int = 5, seed: int = 0) -> dict:
    """Build the layer, run ``steps`` training steps, return peak bytes over the baseline."""
    from bench.classifiers import create_classifier
    from bench.measure import current_rss_bytes, peak_rss_bytes
    from bench.sparse import SparseTargets

    torch.manual_seed(seed)
    h = torch.randn(batch, dim, requires_grad=True)  # the encoder output, with its gradient
    ids = torch.randint(0, num_labels, (batch, labels_per_point)).sort(1).values
    targets = SparseTargets(torch.arange(0, batch * labels_per_point + 1, labels_per_point),
                            ids.flatten(), num_labels)
    kwargs = {"fan_in": fan_in} if layer != "dense" else {}
    # one step of a small layer of the same kind first: libraries, kernels and thread pools
    # initialise lazily, and that one-off memory is not the layer's
    # (building the first optimiser alone imports ~130 MiB of torch modules)
    warm = create_classifier(layer, dim, min(num_labels, 1024), **kwargs)
    warm_optimizer = torch.optim.SGD(warm.parameters(), lr=0.1, momentum=0.9)
    warm.loss(h, SparseTargets(targets.indptr, targets.indices % warm.num_labels, warm.num_labels),
              fused=fused).backward()
    warm_optimizer.step()
    del warm, warm_optimizer
    h.grad = None
    baseline = current_rss_bytes()
    clf = create_classifier(layer, dim, num_labels, **kwargs)
    optimizer = torch.optim.SGD(clf.parameters(), lr=0.1, momentum=0.9)
    t0 = time.perf_counter()
    for _ in range(steps):  # the first step allocates the momentum buffers
        # as train.py does: with set_to_none=False autograd would add a new [L, k] gradient
        # into the old one, holding both for a moment
        optimizer.zero_grad(set_to_none=True)
        h.grad = None
        clf.loss(h, targets, fused=fused).backward()
        optimizer.step()
    seconds = (time.perf_counter() - t0) / steps
    peak = max(peak_rss_bytes(), current_rss_bytes()) - baseline
    state = clf.memory_bytes(optimizer_slots=1)
    return {"layer": layer, "fused": fused, "L": num_labels, "k": fan_in if layer != "dense" else None,
            "d": dim, "B": batch, "steps": steps, "threads": torch.get_num_threads(),
            "state_bytes": state["total"], "state": state, "peak_over_baseline_bytes": peak,
            "ratio": peak / state["total"], "step_seconds": seconds}


def run_isolated(layer: str, num_labels: int, fan_in: int, dim: int, batch: int, fused: bool,
                 threads: int = 0, steps: int = 2) -> dict:
    """``measure_step`` in a fresh interpreter (its own ``ru_maxrss``)."""
    spec = {"layer": layer, "num_labels": num_labels, "fan_in": fan_in, "dim": dim, "batch": batch,
            "fused": fused, "steps": steps}
    cmd = [sys.executable, "-m", "bench.step_memory", json.dumps(spec), str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        return {**spec, "error": (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def estimate_bytes(layer: str, num_labels: int, fan_in: int, dim: int, batch: int, fused: bool) -> int:
    """Rough need, to skip what cannot fit: state (params, grad, momentum) + working memory."""
    per_label = 3 * 4 * (dim if layer == "dense" else fan_in) + (2 * fan_in if layer != "dense" else 0)
    working = 0 if fused else 4 * 4 * batch * num_labels  # logits, probabilities, targets, gradient
    return num_labels * per_label + working


def run_step_memory(labels, fan_ins, dim: int, batch: int, layers=None, threads: int = 0, max_gb: float = 8.0,
                    out_dir="results/kernels", log=print) -> list[dict]:
    """Every (L, k, layer, fused/unfused) in its own process; rows printed and appended to
    ``out_dir/step_memory.jsonl``."""
    from bench.measure import cpu_model, git_commit
    from bench.record import append_record

    env = {"torch": torch.__version__, "cpu": cpu_model(), "git_commit": git_commit()}
    rows = []
    for num_labels in labels:
        for fan_in in fan_ins:
            for layer in layers or LAYERS:
                if layer == "dense" and fan_in != fan_ins[0]:
                    continue  # dense does not depend on k
                for fused in (True, False):
                    need = estimate_bytes(layer, num_labels, fan_in, dim, batch, fused) / 2**30
                    if need > max_gb:
                        row = {"layer": layer, "fused": fused, "num_labels": num_labels,
                               "skipped": f"needs ~{need:.1f} GB > --max-gb {max_gb:.1f}"}
                    else:
                        row = run_isolated(layer, num_labels, fan_in, dim, batch, fused, threads)
                        append_record(Path(out_dir) / "step_memory.jsonl",
                                      {**row, "env": env, "time": time.strftime("%Y-%m-%dT%H:%M:%S")})
                    rows.append(row)
                    log(format_row(row))
    return rows


HEADER = (f"| {'layer':6} | {'loss':7} | {'L':>9} | {'k':>3} | {'state (analytic)':>16} | "
          f"{'peak − baseline':>15} | {'ratio':>5} | {'s/step':>7} |")


def format_row(r: dict) -> str:
    loss = "fused" if r.get("fused") else "unfused"
    if "error" in r or "skipped" in r:
        return f"| {r['layer']:6} | {loss:7} | {r.get('num_labels', r.get('L')):>9} | — | {r.get('error') or r['skipped']} |"
    k = r["k"] if r["k"] is not None else "—"
    return (f"| {r['layer']:6} | {loss:7} | {r['L']:>9} | {k:>3} | {r['state_bytes'] / 2**20:13.1f} MiB | "
            f"{r['peak_over_baseline_bytes'] / 2**20:11.1f} MiB | {r['ratio']:5.2f} | {r['step_seconds']:7.2f} |")


def main(argv: list[str]) -> None:
    spec, threads = json.loads(argv[0]), int(argv[1])
    if threads:
        torch.set_num_threads(threads)
    print(json.dumps(measure_step(**spec)))


if __name__ == "__main__":
    main(sys.argv[1:])
