"""`xmc-bench kernels` on a tiny grid: every layer runs, the CSR peer computes the same layer
as fixed_fan_in (forward and both gradients), records land in JSONL, and oversized
configurations are skipped with a note."""

from __future__ import annotations

import json

import pytest
import torch

from bench.bench_kernels import _csr_pattern, _CSRLayer, _groups, _interleaved_ms, run_kernels
from bench.cli import main
from bench.kernels import fixed_fan_in


def test_csr_peer_matches_fixed_fan_in():
    g = torch.Generator().manual_seed(0)
    B, d, L, k = 5, 12, 30, 4
    ids = torch.rand(L, d, generator=g).argsort(1)[:, :k].sort(1).values
    x = torch.randn(B, d, generator=g, requires_grad=True)
    values = torch.randn(L, k, generator=g, requires_grad=True)
    grad = torch.randn(B, L, generator=g)
    flat = values.detach().reshape(-1).clone().requires_grad_()
    x2 = x.detach().clone().requires_grad_()
    out = _CSRLayer.apply(x2, flat, _csr_pattern(ids, d))
    out.backward(grad)
    want = fixed_fan_in(x, values, ids.to(torch.int16), backend="reference")
    want.backward(grad)
    torch.testing.assert_close(out, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(flat.grad.view(L, k), values.grad, rtol=1e-5, atol=1e-5)


def test_tiny_grid_runs_every_layer_and_records(tmp_path):
    rows = run_kernels(batch=4, dim=16, fan_ins=(3,), labels=(50,), warmup=0, repeats=1,
                       layers=["dense", "masked", "csr", "ffi"], out_dir=tmp_path, log=lambda s: None)
    names = [r.layer for r in rows]
    assert names[:3] == ["dense", "masked", "csr"] and "ffi/reference" in names
    assert all(r.fwd_ms > 0 and r.fwdbwd_ms > 0 and not r.skipped for r in rows)
    records = [json.loads(line) for line in (tmp_path / "kernels.jsonl").read_text().splitlines()]
    assert [r["layer"] for r in records] == names and records[0]["vs_dense_fwd"] == 1.0


def test_cli_skips_what_does_not_fit(tmp_path, capsys):
    assert main(["kernels", "--labels", "40", "--fan-in", "3", "--batch", "2", "--dim", "8", "--repeats", "1",
                 "--max-gb", "0", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "skipped: needs" in out and "would not fit in memory" in out


def test_step_memory_rows_and_the_fused_saving(tmp_path, capsys):
    """Each configuration in its own process; the analytic state is the classifier's own
    memory_bytes, and the unfused loss's [B, L] buffers show in the peak (L = 65536, B = 64:
    16 MiB each) while the fused one's chunks do not."""
    import json

    from bench import create_classifier
    from bench.cli import main

    assert main(["kernels", "--step-memory", "--labels", "65536", "--fan-in", "8", "--dim", "128", "--batch", "64",
                 "--threads", "1", "--out", str(tmp_path)]) == 0
    rows = [json.loads(line) for line in (tmp_path / "step_memory.jsonl").read_text().splitlines()]
    assert [(r["layer"], r["fused"]) for r in rows] == [("ffi", True), ("ffi", False), ("dense", True), ("dense", False)]
    ffi_fused, ffi_unfused, _, _ = rows
    assert ffi_fused["state_bytes"] == create_classifier("ffi", 128, 65536, fan_in=8).memory_bytes(1)["total"]
    # (no dense [B, L] target any more: the unfused path holds logits and their gradient)
    assert ffi_unfused["peak_over_baseline_bytes"] > ffi_fused["peak_over_baseline_bytes"] + 16 * 2**20
    assert "| ffi    | fused" in capsys.readouterr().out


def test_groups_fit_in_memory_and_keep_dense_beside_each():
    # (shared, held between calls, alive during a call): the shared part counts once per group
    parts = {"dense": (1, 4, 1), "masked": (1, 5, 2), "csr": (1, 1, 1), "ffi/cpu": (1, 1, 1), "big": (1, 7, 1)}
    names = list(parts)
    assert _groups(names, parts, 21) == [["dense", "masked", "csr", "ffi/cpu", "big"]]  # 1 + 18 + 2
    assert _groups(names, parts, 12) == [["dense", "masked"], ["dense", "csr", "ffi/cpu"], ["big"]]
    assert _groups(["dense"], parts, 10) == [["dense"]]
    assert _groups(["csr", "ffi/cpu"], parts, 3.5) == [["csr"], ["ffi/cpu"]]
    # ffi/cpu skips past a layer that does not fit beside dense, rather than end up alone
    assert _groups(["dense", "masked", "ffi/cpu"], parts, 8) == [["dense", "ffi/cpu"], ["masked"]]
    assert _groups([], parts, 1) == []


def test_a_layer_that_cannot_sit_beside_dense_gets_the_separate_dense_baseline(tmp_path, monkeypatch):
    import bench.bench_kernels as bk

    real = bk.memory_parts
    monkeypatch.setattr(bk, "memory_parts", lambda layer, *a: (0, int(1.5 * 2**30) - 100, 0) if layer == "masked" else real(layer, *a))
    rows = run_kernels(batch=4, dim=16, fan_ins=(3,), labels=(50,), warmup=0, repeats=1, max_gb=1.5,
                       layers=["dense", "masked", "ffi/reference"], out_dir=tmp_path, log=lambda s: None)
    by = {r.layer: r for r in rows}
    assert by["ffi/reference"].baseline == "interleaved" and by["masked"].baseline == "separate"
    assert by["masked"].vs_dense_fwd == pytest.approx(by["dense"].fwd_ms / by["masked"].fwd_ms)


def test_interleaved_timing_runs_round_robin():
    calls = []
    ms = _interleaved_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, torch.device("cpu"),
                         warmup=1, repeats=2)
    assert calls == ["a", "b"] * 3 and set(ms) == {"a", "b"} and all(v >= 0 for v in ms.values())


@pytest.mark.parametrize("loss", ["bce", "squared_hinge"])
def test_step_table_runs_every_layer_and_records(tmp_path, loss):
    from bench.bench_kernels import run_steps

    rows = run_steps(batch=5, dim=16, fan_ins=(3,), labels=(300,), loss=loss, warmup=0, repeats=1,
                     out_dir=tmp_path, log=lambda s: None)
    assert [r.layer for r in rows] == ["dense", "ffi/cpu", "ffi/cpu-torchloss", "ffi-group/g32"]
    assert all(r.step_ms > 0 and r.vs_dense > 0 and not r.skipped for r in rows)
    records = [json.loads(line) for line in (tmp_path / "kernels.jsonl").read_text().splitlines()]
    assert {r["table"] for r in records} == {"step"} and records[0]["vs_dense"] == 1.0


def test_step_torch_loss_is_the_kernels_loss():
    """The step table's torch loss (dense's and ffi/cpu-torchloss's) is the fused kernels' loss."""
    from bench.bench_kernels import _torch_loss_chunk
    from bench.kernels.fused_loss import score_loss

    z = torch.randn(4, 10) * 3
    rows, ids = torch.tensor([0, 0, 2, 3]), torch.tensor([1, 12, 9, 5])  # label 12 outside the chunk
    y = torch.zeros(4, 10)
    y[rows[ids < 10], ids[ids < 10]] = 1
    buf = torch.zeros(4, 16)
    for loss in ("bce", "squared_hinge"):
        value, grad = _torch_loss_chunk(z, (rows, ids), 0, 10, loss, 0.5, buf)
        want_value, want_grad = score_loss(z, y, loss)
        torch.testing.assert_close(value, want_value.sum())
        torch.testing.assert_close(grad, 0.5 * want_grad)
        assert not buf.any()  # the target buffer is left zeroed


def test_cli_step_table(tmp_path, capsys):
    assert main(["kernels", "--step", "--labels", "64", "--fan-in", "3", "--batch", "3", "--dim", "8",
                 "--repeats", "1", "--warmup", "0", "--layers", "dense", "ffi/cpu", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "step ms" in out and "ffi/cpu " in out and "ffi-group" not in out
