"""Shared test helpers (imported by test modules; pytest puts tests/ on sys.path)."""

import torch
from torch.overrides import TorchFunctionMode


class MaxTensorSize(TorchFunctionMode):
    """Records the largest tensor any torch call creates while active (memory-bound checks)."""

    def __init__(self):
        super().__init__()
        self.max_numel = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.max_numel = max(self.max_numel, t.numel())
        return out


def assert_kernel_close(got: torch.Tensor, want: torch.Tensor, dtype: torch.dtype) -> None:
    """A compiled kernel's result against the reference: float32 tight; bfloat16 (one rounding
    of inputs and outputs) relative to the largest entry."""
    assert got.dtype == dtype and got.shape == want.shape
    if dtype == torch.float32:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    else:
        scale = want.float().abs().max().item()
        torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2 * scale)


# --- shared builders --------------------------------------------------------------------------

# Options that fit a 16-input, 50-label layer, given to any registered classifier whose factory
# takes them: a new registration is covered by the contract tests without a table entry.
SMALL_OPTIONS = {"fan_in": 5, "density": 0.3, "group_size": 4, "head_labels": 7, "seed": 0}


def small_classifier(name: str, in_features: int, num_labels: int, label_chunk: int | None = None, **options):
    """``create_classifier(name, ...)`` with the ``SMALL_OPTIONS`` its factory takes (``options``
    win); ``label_chunk`` set to force several (ragged) label chunks."""
    from bench.classifiers import create_classifier, factory_options

    takes = factory_options(name)
    small = {k: v for k, v in SMALL_OPTIONS.items() if takes is None or k in takes}
    clf = create_classifier(name, in_features, num_labels, **(small | options))
    if label_chunk is not None:
        clf.label_chunk = label_chunk
    return clf


def random_targets(num_rows: int, num_labels: int, seed: int = 0, max_per_row: int = 4):
    """SparseTargets with 0..``max_per_row`` distinct labels per row; row 0 has none."""
    from bench.sparse import CSR, SparseTargets

    g = torch.Generator().manual_seed(seed)
    rows = [sorted(torch.randperm(num_labels, generator=g)[: int(n)].tolist())
            for n in torch.randint(0, max_per_row + 1, (num_rows,), generator=g)]
    rows[0] = []  # a point without labels
    return SparseTargets.from_csr(CSR.from_rows(rows, num_labels))


def run_records(results_dir) -> list[dict]:
    """Every record of ``<results_dir>/runs.jsonl``, in order."""
    from pathlib import Path

    from bench.record import read_records

    return list(read_records(Path(results_dir) / "runs.jsonl"))
