"""Compiled CPU backend of the fixed fan-in op: C built once with the system C compiler,
loaded through ctypes, parallel over label tiles with POSIX threads.

Why these loops (B = batch, d = inputs, L = labels, k = fan-in; 2·B·L·k FLOPs per op):

- the input is used transposed, ``xt [d, B]`` float32, so the k inputs of a label are k
  contiguous rows of B floats (the whole of ``xt`` is d·B·4 bytes = 768 KiB at d = 768,
  B = 256: it stays in L2 across every label);
- **forward**: per label, 64 batch columns at a time sit in four 16-float registers while
  the k rows ``xt[idx[l, j]]`` stream past — one load per FMA, nothing else touches memory;
  16 labels are finished into a small tile and written as 16 contiguous floats per batch row
  of ``out [B, L]`` (no strided single-float stores, no ``[L, B]`` transpose);
- **grad_values**: the same gathers, dotted with the label's column of ``grad_out``, which a
  16-label tile first copies into ``[16, B]`` (L1) so every dot product reads two
  contiguous rows;
- **grad_input** is a scatter (``grad_xt[idx[l, j]] += v[l, j] · grad_out[:, l]``): each
  thread scatters its own labels into a private ``[d, B]`` buffer (L2-resident, no atomics,
  no sorting), and the buffers are summed at the end (threads · d · B adds).

Traffic beyond the compulsory ``grad_out``/``out`` (B·L·4 bytes) and ``values``/``indices``
(L·k·(4 + 2) bytes) is only L2 reads of ``xt``: the op is bound by L2 bandwidth, not by DRAM
as the reference is (which writes and reads a ``[Lc, k, B]`` block per chunk).

Math runs in float32: bfloat16 inputs are upcast (values L·k, input B·d, ``grad_out`` B·L)
and results are cast back, so bfloat16 costs one extra pass over ``[B, L]`` on this path.
float64 goes to the reference (``gradcheck``). If no compiler is found or the build fails,
the backend says why once (a warning) and stays unavailable: ``reference`` runs instead.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from bench.kernels import native, reference
from bench.kernels.native import CACHE_ENV, PREAMBLE  # noqa: F401 — CACHE_ENV: where the library is kept
from bench.kernels.ops import register_backend

SOURCE = PREAMBLE + r"""
#define LT 16   /* labels per tile */

typedef struct {
    const float *xt, *v, *g; const void *idx; float *out;
    int64_t B, L, k, d;
} args_t;

/* Copy the tile's columns of g [B, L] into gt [LT, B]. */
static void load_tile(const args_t *a, int64_t l0, int64_t nl, float *gt) {
    for (int64_t b = 0; b < a->B; b++) {
        const float *row = a->g + b * a->L + l0;
        for (int64_t t = 0; t < nl; t++) gt[t * a->B + b] = row[t];
    }
}

#define DEFINE_KERNELS(IT, SUFFIX)                                                              \
static void fwd_##SUFFIX(const void *args, int64_t lo, int64_t hi, int tid) {                   \
    const args_t *a = args;                                                                     \
    const int64_t B = a->B, L = a->L, k = a->k;                                                 \
    float *tile = malloc(sizeof(float) * LT * B);                                               \
    for (int64_t tl = lo; tl < hi; tl++) {                                                      \
        const int64_t l0 = tl * LT, nl = L - l0 < LT ? L - l0 : LT;                             \
        for (int64_t t = 0; t < nl; t++) {                                                      \
            const float *w = a->v + (l0 + t) * k; const IT *ix = (const IT *)a->idx + (l0 + t) * k; \
            float *acc = tile + t * B; int64_t b = 0;                                           \
            for (; b + 128 <= B; b += 128) {  /* 8 independent FMA chains hide the latency */   \
                vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0}; \
                for (int64_t j = 0; j < k; j++) {                                               \
                    const float *r = a->xt + (int64_t)ix[j] * B + b; vf wj = (vf){0} + w[j];     \
                    a0 += wj * ld(r); a1 += wj * ld(r + 16); a2 += wj * ld(r + 32); a3 += wj * ld(r + 48); \
                    a4 += wj * ld(r + 64); a5 += wj * ld(r + 80); a6 += wj * ld(r + 96); a7 += wj * ld(r + 112); \
                }                                                                               \
                st(acc + b, a0); st(acc + b + 16, a1); st(acc + b + 32, a2); st(acc + b + 48, a3); \
                st(acc + b + 64, a4); st(acc + b + 80, a5); st(acc + b + 96, a6); st(acc + b + 112, a7); \
            }                                                                                   \
            for (; b + 64 <= B; b += 64) {                                                      \
                vf a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};                                      \
                for (int64_t j = 0; j < k; j++) {                                               \
                    const float *r = a->xt + (int64_t)ix[j] * B + b; vf wj = (vf){0} + w[j];     \
                    a0 += wj * ld(r); a1 += wj * ld(r + 16); a2 += wj * ld(r + 32); a3 += wj * ld(r + 48); \
                }                                                                               \
                st(acc + b, a0); st(acc + b + 16, a1); st(acc + b + 32, a2); st(acc + b + 48, a3); \
            }                                                                                   \
            for (; b + 16 <= B; b += 16) {                                                      \
                vf a0 = {0};                                                                    \
                for (int64_t j = 0; j < k; j++)                                                 \
                    a0 += ((vf){0} + w[j]) * ld(a->xt + (int64_t)ix[j] * B + b);                \
                st(acc + b, a0);                                                                \
            }                                                                                   \
            for (; b < B; b++) {                                                                \
                float s = 0;                                                                    \
                for (int64_t j = 0; j < k; j++) s += w[j] * a->xt[(int64_t)ix[j] * B + b];      \
                acc[b] = s;                                                                     \
            }                                                                                   \
        }                                                                                       \
        for (int64_t b = 0; b < B; b++) {                                                       \
            float *o = a->out + b * L + l0;                                                     \
            for (int64_t t = 0; t < nl; t++) o[t] = tile[t * B + b];                            \
        }                                                                                       \
    }                                                                                           \
    free(tile);                                                                                 \
}                                                                                               \
static void gv_##SUFFIX(const void *args, int64_t lo, int64_t hi, int tid) {                    \
    const args_t *a = args;                                                                     \
    const int64_t B = a->B, L = a->L, k = a->k;                                                 \
    float *gt = malloc(sizeof(float) * LT * B);                                                 \
    for (int64_t tl = lo; tl < hi; tl++) {                                                      \
        const int64_t l0 = tl * LT, nl = L - l0 < LT ? L - l0 : LT;                             \
        load_tile(a, l0, nl, gt);                                                               \
        for (int64_t t = 0; t < nl; t++) {                                                      \
            const IT *ix = (const IT *)a->idx + (l0 + t) * k; const float *gr = gt + t * B;     \
            float *o = a->out + (l0 + t) * k;                                                   \
            for (int64_t j = 0; j < k; j++) {                                                   \
                const float *r = a->xt + (int64_t)ix[j] * B; int64_t b = 0;                     \
                vf s0 = {0}, s1 = {0}, s2 = {0}, s3 = {0};                                      \
                for (; b + 64 <= B; b += 64) {                                                  \
                    s0 += ld(gr + b) * ld(r + b); s1 += ld(gr + b + 16) * ld(r + b + 16);       \
                    s2 += ld(gr + b + 32) * ld(r + b + 32); s3 += ld(gr + b + 48) * ld(r + b + 48); \
                }                                                                               \
                for (; b + 16 <= B; b += 16) s0 += ld(gr + b) * ld(r + b);                      \
                float s = hsum((s0 + s1) + (s2 + s3));                                          \
                for (; b < B; b++) s += gr[b] * r[b];                                           \
                o[j] = s;                                                                       \
            }                                                                                   \
        }                                                                                       \
    }                                                                                           \
    free(gt);                                                                                   \
}                                                                                               \
static void gx_##SUFFIX(const void *args, int64_t lo, int64_t hi, int tid) {                    \
    const args_t *a = args;                                                                     \
    const int64_t B = a->B, L = a->L, k = a->k;                                                 \
    float *buf = a->out + (int64_t)tid * a->d * B;  /* this thread's [d, B] */                  \
    memset(buf, 0, sizeof(float) * a->d * B);                                                   \
    float *gt = malloc(sizeof(float) * LT * B);                                                 \
    for (int64_t tl = lo; tl < hi; tl++) {                                                      \
        const int64_t l0 = tl * LT, nl = L - l0 < LT ? L - l0 : LT;                             \
        load_tile(a, l0, nl, gt);                                                               \
        for (int64_t t = 0; t < nl; t++) {                                                      \
            const float *w = a->v + (l0 + t) * k; const IT *ix = (const IT *)a->idx + (l0 + t) * k; \
            const float *gr = gt + t * B; int64_t b = 0;                                        \
            for (; b + 64 <= B; b += 64) {                                                      \
                vf g0 = ld(gr + b), g1 = ld(gr + b + 16), g2 = ld(gr + b + 32), g3 = ld(gr + b + 48); \
                for (int64_t j = 0; j < k; j++) {                                               \
                    float *r = buf + (int64_t)ix[j] * B + b; vf wj = (vf){0} + w[j];             \
                    st(r, ld(r) + wj * g0); st(r + 16, ld(r + 16) + wj * g1);                   \
                    st(r + 32, ld(r + 32) + wj * g2); st(r + 48, ld(r + 48) + wj * g3);         \
                }                                                                               \
            }                                                                                   \
            for (; b + 16 <= B; b += 16) {                                                      \
                vf g0 = ld(gr + b);                                                             \
                for (int64_t j = 0; j < k; j++) {                                               \
                    float *r = buf + (int64_t)ix[j] * B + b; st(r, ld(r) + ((vf){0} + w[j]) * g0); \
                }                                                                               \
            }                                                                                   \
            for (; b < B; b++)                                                                  \
                for (int64_t j = 0; j < k; j++) buf[(int64_t)ix[j] * B + b] += w[j] * gr[b];   \
        }                                                                                       \
    }                                                                                           \
    free(gt);                                                                                   \
}

DEFINE_KERNELS(int16_t, i16)
DEFINE_KERNELS(int32_t, i32)

static int64_t tiles(int64_t L) { return (L + LT - 1) / LT; }

/* xt [d, B], v [L, k], idx [L, k] (2 or 4 bytes) -> out [B, L] */
void ffi_forward(const float *xt, const float *v, const void *idx, int idx_bytes, float *out,
                 int64_t B, int64_t d, int64_t L, int64_t k, int nt) {
    args_t a = {xt, v, NULL, idx, out, B, L, k, d};
    parallel(idx_bytes == 2 ? fwd_i16 : fwd_i32, &a, tiles(L), nt);
}

/* g [B, L], xt [d, B], idx [L, k] -> out [L, k] */
void ffi_grad_values(const float *g, const float *xt, const void *idx, int idx_bytes, float *out,
                     int64_t B, int64_t d, int64_t L, int64_t k, int nt) {
    args_t a = {xt, NULL, g, idx, out, B, L, k, d};
    parallel(idx_bytes == 2 ? gv_i16 : gv_i32, &a, tiles(L), nt);
}

/* g [B, L], v [L, k], idx [L, k] -> out [nt, d, B], one partial sum per thread (summed by the caller) */
void ffi_grad_input(const float *g, const float *v, const void *idx, int idx_bytes, float *out,
                    int64_t B, int64_t d, int64_t L, int64_t k, int nt) {
    args_t a = {NULL, v, g, idx, out, B, L, k, d};
    parallel(idx_bytes == 2 ? gx_i16 : gx_i32, &a, tiles(L), nt);
}

/* how many partial buffers ffi_grad_input will write for these sizes */
int ffi_threads_used(int64_t L, int nt) { return threads_for(tiles(L), nt); }
"""

@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; ``None`` (with one warning) if that fails."""
    lib = native.load("ffi_cpu", SOURCE, "fixed fan-in")
    if lib is not None:
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        native.declare(lib, ("ffi_forward", "ffi_grad_values", "ffi_grad_input"),
                       [ptr, ptr, ptr, ctypes.c_int, ptr, i64, i64, i64, i64, ctypes.c_int])
        native.declare(lib, ("ffi_threads_used",), [i64, ctypes.c_int], ctypes.c_int)
    return lib


def available(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16, torch.float16) \
        and library() is not None


def _ids(indices: torch.Tensor) -> torch.Tensor:
    """int16/int32 as they are; int64 narrowed to int32 (input ids are < d < 2^31)."""
    return indices.contiguous() if indices.dtype in (torch.int16, torch.int32) else indices.to(torch.int32).contiguous()


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float32).contiguous()


def _wide(*tensors: torch.Tensor) -> bool:
    return any(t.dtype == torch.float64 for t in tensors)


def _call(fn, a, b, ids, out, batch, d, num_labels, k):
    fn(a.data_ptr(), b.data_ptr(), ids.data_ptr(), ids.element_size(), out.data_ptr(),
       batch, d, num_labels, k, torch.get_num_threads())


def ffi_forward(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    if _wide(x, values):
        return reference.ffi_forward(x, values, indices)
    (batch, d), (num_labels, k) = x.shape, values.shape
    out = torch.empty(batch, num_labels, dtype=torch.float32)  # [B, L]
    if batch and num_labels:
        ids, xt = _ids(indices), _f32(x).t().contiguous()  # xt [d, B]
        _call(library().ffi_forward, xt, _f32(values), ids, out, batch, d, num_labels, k)
    return out.to(torch.result_type(x, values))


def ffi_grad_values(grad_out: torch.Tensor, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    if _wide(grad_out, x):
        return reference.ffi_grad_values(grad_out, x, indices)
    (batch, d), (num_labels, k) = x.shape, indices.shape
    out = torch.empty(num_labels, k, dtype=torch.float32)  # [L, k]
    if batch and num_labels:
        ids, xt = _ids(indices), _f32(x).t().contiguous()
        _call(library().ffi_grad_values, _f32(grad_out), xt, ids, out, batch, d, num_labels, k)
    else:
        out.zero_()
    return out.to(torch.result_type(grad_out, x))


def ffi_grad_input(grad_out: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                   in_features: int) -> torch.Tensor:
    if _wide(grad_out, values):
        return reference.ffi_grad_input(grad_out, values, indices, in_features)
    batch, (num_labels, k) = grad_out.shape[0], values.shape
    dtype = torch.result_type(grad_out, values)
    if not (batch and num_labels):
        return torch.zeros(batch, in_features, dtype=dtype)
    lib = library()
    parts = torch.empty(lib.ffi_threads_used(num_labels, torch.get_num_threads()), in_features, batch)  # [T, d, B]
    _call(lib.ffi_grad_input, _f32(grad_out), _f32(values), _ids(indices), parts, batch, in_features, num_labels, k)
    return parts.sum(0).t().to(dtype).contiguous()  # [B, d]


# Above the reference (-1), below GPU backends; chosen for every CPU input it can compile for.
register_backend("cpu", ffi_forward, ffi_grad_input, ffi_grad_values, available=available, priority=5)
