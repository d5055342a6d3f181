"""The Triton paths on a real GPU (skipped without CUDA; `scripts/gpu_check.sh` runs them): the
fused loss step and the score-and-select against the torch references in float32 and
bfloat16, the classifiers' fused paths against their own torch paths, and one `xmc-bench run`
on CUDA. The interpreter tests (test_kernels_triton.py) check the same kernels on CPU."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from helpers import random_targets, small_classifier

pytestmark = pytest.mark.skipif(not torch.cuda.is_available() or importlib.util.find_spec("triton") is None,
                                reason="needs a CUDA device and triton")

SHAPES = [(64, 128, 5000, 16, 1), (37, 96, 3001, 8, 8), (256, 256, 20000, 32, 32)]


def _case(batch, d, num_labels, k, group, dtype, seed=0):
    from bench.kernels import fused_loss

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, d, generator=g).to("cuda", dtype)
    values = (torch.randn(num_labels, k, generator=g) * k ** -0.5).to("cuda", dtype)
    bias = (torch.randn(num_labels, generator=g) * 0.1).to("cuda", dtype)
    ids = torch.rand(-(-num_labels // group), d, generator=g).argsort(1)[:, :k].to(torch.int16).cuda()
    counts = torch.randint(0, 6, (batch,), generator=g)
    indptr = torch.zeros(batch + 1, dtype=torch.int64)
    indptr[1:] = counts.cumsum(0)
    labels = torch.randint(0, num_labels, (int(indptr[-1]),), generator=g)
    return x, values, bias, ids, fused_loss.Targets(indptr.cuda(), labels.cuda())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("loss", ["bce", "squared_hinge"])
def test_fused_loss_on_cuda_matches_the_reference(shape, dtype, loss):
    from bench.kernels import fused_loss, triton_fused

    batch, d, num_labels, k, group = shape
    x, values, bias, ids, targets = _case(*shape, dtype)
    scale = 1.0 / batch
    got = triton_fused.loss_grads(x, values, ids, group, bias, targets, fused_loss.loss_id(loss), scale)
    # the reference in float32 on the same (rounded) operands
    args = (x.float(), values.float(), ids) if group == 1 else (x.float(), values.float(), ids, group)
    reference = fused_loss.reference_ffi_loss if group == 1 else fused_loss.reference_group_loss
    want = reference(*args, bias.float(), targets, loss, scale)
    for name, a, w in zip(("loss", "grad_x", "grad_values", "grad_bias"), got, want):
        tol = 2e-4 * max(1.0, w.abs().max().item())
        torch.testing.assert_close(a, w, rtol=1e-4, atol=tol, msg=name)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", SHAPES)
def test_triton_topk_on_cuda_equals_the_ranked_scores(shape, dtype):
    from bench.kernels import group_fan_in, reference, triton_fused
    from bench.ranking import select_chunk

    batch, d, num_labels, k, group = shape
    x, values, bias, ids, _ = _case(*shape, dtype)
    # the kernel accumulates in float32 exactly as the forward kernel: rank its scores
    scores = (group_fan_in.group_forward(x.float(), values.float(), ids, group) if group > 1
              else reference.ffi_forward(x.float(), values.float(), ids)) + bias.float()
    for top in (1, 5, 20):
        got_s, got_i = triton_fused.topk(x, values, ids, group, bias, top)
        want_s, _ = select_chunk(scores, top)
        torch.testing.assert_close(got_s, want_s, rtol=1e-4, atol=1e-4)
        # ids may differ only where scores tie to float rounding: their scores must agree
        torch.testing.assert_close(scores.gather(1, got_i), want_s, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["ffi", "ffi-group", "head-tail"])
def test_classifiers_fused_paths_on_cuda(name):
    from bench import losses
    from bench.classifiers.base import Classifier

    clf = small_classifier(name, 16, 50).cuda()
    h = torch.randn(6, 16, device="cuda", requires_grad=True)
    from bench.sparse import SparseTargets

    on_host = random_targets(6, 50, seed=1)
    targets = SparseTargets(on_host.indptr.cuda(), on_host.indices.cuda(), 50)
    for loss in ("bce", "squared_hinge"):
        criterion = losses.create(loss)
        clf.zero_grad()
        h.grad = None
        fused = clf.loss(h, targets, criterion=criterion)
        fused.backward()
        got = [h.grad.clone()] + [p.grad.clone() for p in clf.parameters()]
        clf.zero_grad()
        h.grad = None
        plain = clf.loss(h, targets, fused=False, criterion=criterion)
        plain.backward()
        torch.testing.assert_close(fused, plain, rtol=1e-4, atol=1e-5)
        for a, w in zip(got, [h.grad] + [p.grad for p in clf.parameters()]):
            torch.testing.assert_close(a, w, rtol=1e-4, atol=1e-5)
    with torch.no_grad():
        x = torch.randn(7, 16, device="cuda")
        got, want = clf.topk(x, 5), Classifier.topk(clf, x, 5)
    torch.testing.assert_close(got[0], want[0])
    assert torch.equal(got[1], want[1])


def test_run_on_cuda(tmp_path):
    from bench.cli import main

    assert main(["run", "method=ffi-set", "train.device=cuda", "data.num_labels=3000", "data.num_train=512",
                 "data.num_test=128", "train.epochs=1", "dst.interval=1", f"results_dir={tmp_path}"]) == 0
    import json

    records = [json.loads(line) for line in (tmp_path / "runs.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == ["ok"] and records[0]["environment"]["device"].startswith("cuda")
