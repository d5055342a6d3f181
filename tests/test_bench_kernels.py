"""`xmc-bench kernels` on a tiny grid: every layer runs, the CSR peer computes the same layer
as fixed_fan_in (forward and both gradients), records land in JSONL, and oversized
configurations are skipped with a note."""

from __future__ import annotations

import json

import torch

from bench.bench_kernels import _csr_pattern, _CSRLayer, run_kernels
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
