"""`xmc-bench kernels` on a tiny grid: every layer runs, the CSR peer computes the same layer
as fixed_fan_in (forward and both gradients), records land in JSONL, and oversized
configurations are skipped with a note."""

from __future__ import annotations

import json

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
    assert ffi_unfused["peak_over_baseline_bytes"] > ffi_fused["peak_over_baseline_bytes"] + 32 * 2**20
    assert "| ffi    | fused" in capsys.readouterr().out


def test_groups_fit_in_memory_and_keep_dense_beside_each():
    need = {"dense": 4.0, "masked": 5.0, "csr": 1.0, "ffi/cpu": 1.0, "big": 7.0}
    names = list(need)
    assert _groups(names, need, 20.0) == [["dense", "masked", "csr", "ffi/cpu", "big"]]
    assert _groups(names, need, 10.0) == [["dense", "masked", "csr"], ["dense", "ffi/cpu"], ["big"]]
    assert _groups(["dense"], need, 10.0) == [["dense"]]
    assert _groups(["csr", "ffi/cpu"], need, 1.5) == [["csr"], ["ffi/cpu"]]
    assert _groups([], need, 1.0) == []


def test_interleaved_timing_runs_round_robin():
    calls = []
    ms = _interleaved_ms({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, torch.device("cpu"),
                         warmup=1, repeats=2)
    assert calls == ["a", "b"] * 3 and set(ms) == {"a", "b"} and all(v >= 0 for v in ms.values())
