"""Compiled CPU backend of the fixed fan-in op: C built once with the system C compiler,
loaded through ctypes, parallel over 256-label chunks with POSIX threads.

Why these loops (B = batch, d = inputs, L = labels, k = fan-in; 2·B·L·k FLOPs per pass; every
FMA needs its own row of ``x``: labels share no inputs, so the op is load-bound, never FMA-bound):

- the input is used transposed, ``xt [d, B]`` float32 (d·B·4 bytes = 768 KiB at d = 768,
  B = 256: L2-resident), so the k inputs of a label are k rows of B floats;
- **forward**: ``xt`` is re-laid per thread as 64-column tiles ``[d, 64]``; 4 labels × 64
  batch columns (16 registers) take one broadcast and 4 loads per 4 FMAs while the ids stream;
  a chunk's results land in ``stage [256, B]`` and go to ``out [B, L]`` through 16 × 16
  register transposes as whole 64-byte lines with streaming stores, into 2 MiB pages (a fresh
  128 MiB ``out`` otherwise spends ~50 ms in 4 KiB page faults);
- **backward** (both gradients from one read of ``grad_out``, the op's only large input): a
  chunk's 256 columns of ``grad_out [B, L]`` are transposed once into ``gT [256, B]`` (L2), then
  ``grad_values``: per label, up to 256 batch columns of ``gT`` in registers, dotted with its k
  rows of ``xt``; ``grad_input`` is a scatter (``buf[idx[l, j]] += v[l, j] · gT[l]``) into the
  thread's private buffer laid out as 16-column tiles ``[d, 16]`` (48 KiB, about L1) and swept
  tile by tile (from a [d, B] buffer in L2 the fused backward took 270 ms, not 190, at
  L = 131072, B = 256, k = 32); the private
  buffers (no atomics, no sorting) are summed by the caller (threads · d · B adds).

Traffic beyond the compulsory ``out`` written / ``grad_out`` read (B·L·4 bytes each) and
``values``/``indices`` (L·k·(4 + 2) bytes) is L1/L2 only.

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
#ifdef __AVX512F__
#include <immintrin.h>
#endif
#define AI static inline __attribute__((always_inline))
#define LC 256  /* labels per chunk: a thread's unit of work */

static inline vf bc(float f) { return (vf){f, f, f, f, f, f, f, f, f, f, f, f, f, f, f, f}; }

static inline float vsum(vf v) {
#ifdef __AVX512F__
    return _mm512_reduce_add_ps((__m512)v);
#else
    return hsum(v);
#endif
}

/* Store 16 floats that nobody reads soon (out [B, L]): a streaming store skips reading the
   line from memory first, when p is 64-byte aligned. */
static inline void st_out(float *p, vf v) {
#ifdef __AVX512F__
    if (((uintptr_t)p & 63) == 0) { _mm512_stream_ps(p, (__m512)v); return; }
#endif
    st(p, v);
}

/* 16 × 16 transpose in registers: m[i][c] <-> m[c][i] */
static inline void transpose16(vf m[16]) {
#ifdef __AVX512F__
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps((__m512)m[i], (__m512)m[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps((__m512)m[i], (__m512)m[i + 1]);
    }
    for (int i = 0; i < 16; i += 4)
        for (int h = 0; h < 2; h++) {
            u[i + h] = (__m512)_mm512_unpacklo_pd((__m512d)t[i + h], (__m512d)t[i + 2 + h]);
            u[i + 2 + h] = (__m512)_mm512_unpackhi_pd((__m512d)t[i + h], (__m512d)t[i + 2 + h]);
        }
    /* lane q of u[4r + s] holds rows 4r..4r+3 of column 4q + o, o = 0, 2, 1, 3 for s = 0..3 */
    for (int s = 0; s < 4; s++) {
        const int o = s == 1 ? 2 : s == 2 ? 1 : s;
        const __m512 a = _mm512_shuffle_f32x4(u[s], u[4 + s], 0x88), b = _mm512_shuffle_f32x4(u[s], u[4 + s], 0xdd);
        const __m512 c = _mm512_shuffle_f32x4(u[8 + s], u[12 + s], 0x88), e = _mm512_shuffle_f32x4(u[8 + s], u[12 + s], 0xdd);
        m[o] = (vf)_mm512_shuffle_f32x4(a, c, 0x88); m[o + 8] = (vf)_mm512_shuffle_f32x4(a, c, 0xdd);
        m[o + 4] = (vf)_mm512_shuffle_f32x4(b, e, 0x88); m[o + 12] = (vf)_mm512_shuffle_f32x4(b, e, 0xdd);
    }
#else
    for (int i = 0; i < 16; i++)
        for (int c = i + 1; c < 16; c++) { const float f = m[i][c]; m[i][c] = m[c][i]; m[c][i] = f; }
#endif
}

/* the first n ≤ 16 floats at p (the rest zero) / of v to p */
static inline vf ld_part(const float *p, int64_t n) {
    if (n == 16) return ld(p);
#ifdef __AVX512F__
    return (vf)_mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1), p);
#else
    float tmp[16] = {0}; memcpy(tmp, p, sizeof(float) * n); return ld(tmp);
#endif
}
static inline void st_part(float *p, vf v, int64_t n) {
#ifdef __AVX512F__
    _mm512_mask_storeu_ps(p, (__mmask16)((1u << n) - 1), (__m512)v);
#else
    float tmp[16]; st(tmp, v); memcpy(p, tmp, sizeof(float) * n);
#endif
}

typedef struct {
    const float *xt, *v, *g; const void *idx; float *out, *gv, *gx;
    int64_t B, BP, d, L, k; int idx_bytes;
} args_t;

/* the ids of labels [l0, l0 + n) as int32 (ids[t·k + j]) */
static void chunk_ids(const args_t *a, int64_t l0, int64_t n, int32_t *ids) {
    const int64_t m = n * a->k, o = l0 * a->k;
    if (a->idx_bytes == 2) for (int64_t i = 0; i < m; i++) ids[i] = ((const int16_t *)a->idx)[o + i];
    else memcpy(ids, (const int32_t *)a->idx + o, sizeof(int32_t) * m);
}

/* ---- forward ---------------------------------------------------------------------------
   xp: xt [d, B] re-laid as column tiles, 64 wide then 16 wide (zero-padded to BP): tile of
   first column c0 and width W is [d, W] at xp + d·c0, so a label's k rows of one tile are
   W floats each. R labels × W columns sit in R·W/16 registers while the k ids stream. */
AI void fwd_block(const int R, const int NV, const float *X, const float *w, const int32_t *id, int64_t k,
                  float *stage, int64_t BP) {
    vf acc[4][4];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) acc[r][q] = (vf){0};
    for (int64_t j = 0; j < k; j++) {
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const float *row = X + (int64_t)id[r * k + j] * (16 * NV); const vf s = bc(w[r * k + j]);
            _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) acc[r][q] += s * ld(row + 16 * q);
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) st(stage + r * BP + 16 * q, acc[r][q]);
}
static void fwd_4_4(const float *X, const float *w, const int32_t *id, int64_t k, float *s, int64_t BP) { fwd_block(4, 4, X, w, id, k, s, BP); }
static void fwd_1_4(const float *X, const float *w, const int32_t *id, int64_t k, float *s, int64_t BP) { fwd_block(1, 4, X, w, id, k, s, BP); }
static void fwd_4_1(const float *X, const float *w, const int32_t *id, int64_t k, float *s, int64_t BP) { fwd_block(4, 1, X, w, id, k, s, BP); }
static void fwd_1_1(const float *X, const float *w, const int32_t *id, int64_t k, float *s, int64_t BP) { fwd_block(1, 1, X, w, id, k, s, BP); }

/* out[b, t] = stage[t, b] for b < B, t < n (out rows L floats apart): 16 × 16 blocks */
static void write_out(const float *stage, int64_t BP, int64_t B, int64_t n, float *out, int64_t L) {
    for (int64_t t0 = 0; t0 < n; t0 += 16) {
        const int64_t nt = n - t0 < 16 ? n - t0 : 16;
        for (int64_t b0 = 0; b0 < B; b0 += 16) {
            vf m[16];
            for (int i = 0; i < 16; i++) m[i] = i < nt ? ld(stage + (t0 + i) * BP + b0) : (vf){0};
            transpose16(m);
            const int64_t nb = B - b0 < 16 ? B - b0 : 16;
            for (int i = 0; i < nb; i++) {
                float *o = out + (b0 + i) * L + t0;
                if (nt == 16) st_out(o, m[i]); else st_part(o, m[i], nt);
            }
        }
    }
}

static float *pack_tiles(const args_t *a) {
    const int64_t B = a->B, BP = a->BP, d = a->d, n64 = B / 64 * 64;
    float *xp = aligned_alloc(64, sizeof(float) * d * BP);
    for (int64_t c0 = 0; c0 < BP; c0 += c0 < n64 ? 64 : 16) {
        const int64_t W = c0 < n64 ? 64 : 16, nc = B - c0 < W ? B - c0 : W;
        for (int64_t i = 0; i < d; i++) {
            float *dst = xp + d * c0 + i * W;
            memcpy(dst, a->xt + i * B + c0, sizeof(float) * nc);
            memset(dst + nc, 0, sizeof(float) * (W - nc));
        }
    }
    return xp;
}

static void fwd(const void *args, int64_t lo, int64_t hi, int tid) {
    const args_t *a = args;
    const int64_t B = a->B, BP = a->BP, d = a->d, k = a->k, n64 = B / 64 * 64;
    float *xp = pack_tiles(a), *stage = aligned_alloc(64, sizeof(float) * LC * BP);  /* stage [LC, BP] */
    int32_t *ids = malloc(sizeof(int32_t) * LC * k);
    for (int64_t c = lo; c < hi; c++) {
        const int64_t l0 = c * LC, n = a->L - l0 < LC ? a->L - l0 : LC;
        const float *w = a->v + l0 * k;
        chunk_ids(a, l0, n, ids);
        for (int64_t c0 = 0; c0 < BP; c0 += c0 < n64 ? 64 : 16) {
            const int wide = c0 < n64; const float *X = xp + d * c0;
            int64_t t = 0;
            for (; t + 4 <= n; t += 4) (wide ? fwd_4_4 : fwd_4_1)(X, w + t * k, ids + t * k, k, stage + t * BP + c0, BP);
            for (; t < n; t++) (wide ? fwd_1_4 : fwd_1_1)(X, w + t * k, ids + t * k, k, stage + t * BP + c0, BP);
        }
        write_out(stage, BP, B, n, a->out + l0, a->L);
    }
#ifdef __AVX512F__
    _mm_sfence();  /* streaming stores are visible to other threads after this */
#endif
    free(xp); free(stage); free(ids);
}

/* ---- backward ----------------------------------------------------------------------------
   A chunk's columns of g [B, L] are read once, transposed into gT [n, BP] (a row of B floats
   per label, L2-resident), then both gradients are taken from it:
   grad_values: per label, 16·NV batch columns of its gT row in registers, for each id j
     pv[j] += gT[l, cols] · xt[id, cols]   (xp [d, BP]: xt zero-padded), reduced per label;
   grad_input: per 16-column tile of the thread's private buffer ([d, 16]: 48 KiB, about L1),
     buf[id, cols] += v[l, j] · gT[l, cols] for every label of the chunk: a read-modify-write of
     one vector per FMA, served by L1 rather than L2 (a [d, B] buffer is 768 KiB). */
AI void gv_block(const int NV, const float *gr, const float *xp, int64_t BP, const int32_t *id, int64_t k, vf *pv) {
    vf g[16];
    _Pragma("GCC unroll 16") for (int q = 0; q < NV; q++) g[q] = ld(gr + 16 * q);
    for (int64_t j = 0; j < k; j++) {
        const float *row = xp + (int64_t)id[j] * BP;
        vf s0 = (vf){0}, s1 = (vf){0};
        _Pragma("GCC unroll 16") for (int q = 0; q < NV; q += 2) {
            s0 += g[q] * ld(row + 16 * q);
            if (q + 1 < NV) s1 += g[q + 1] * ld(row + 16 * q + 16);
        }
        pv[j] += s0 + s1;
    }
}
static void gv_16(const float *gr, const float *xp, int64_t BP, const int32_t *id, int64_t k, vf *pv) { gv_block(16, gr, xp, BP, id, k, pv); }
static void gv_4(const float *gr, const float *xp, int64_t BP, const int32_t *id, int64_t k, vf *pv) { gv_block(4, gr, xp, BP, id, k, pv); }
static void gv_1(const float *gr, const float *xp, int64_t BP, const int32_t *id, int64_t k, vf *pv) { gv_block(1, gr, xp, BP, id, k, pv); }

/* X [d, 16] (one column tile of the buffer) += Σ over labels t < n, ids j: v[t, j] · gT[t, cols] */
static void gx_tile(float *X, const float *gT, int64_t BP, const float *v, const int32_t *ids, int64_t n, int64_t k) {
    for (int64_t t = 0; t < n; t++) {
        const vf g = ld(gT + t * BP); const float *w = v + t * k; const int32_t *id = ids + t * k;
        _Pragma("GCC unroll 8") for (int64_t j = 0; j < k; j++) {
            float *p = X + (int64_t)id[j] * 16;
            st(p, ld(p) + bc(w[j]) * g);
        }
    }
}

/* gT[t, b] = g[b, l0 + t] for t < n, b < BP (zero for b ≥ B); the next chunk's part of each row
   of g is prefetched: rows are L floats apart, which no hardware prefetcher follows */
static void load_chunk(const args_t *a, int64_t l0, int64_t n, float *gT) {
    const int64_t B = a->B, BP = a->BP, L = a->L;
    for (int64_t t0 = 0; t0 < n; t0 += 16) {
        const int64_t nt = n - t0 < 16 ? n - t0 : 16, ahead = l0 + t0 + LC < L;
        for (int64_t b0 = 0; b0 < BP; b0 += 16) {
            vf m[16];
            for (int i = 0; i < 16; i++) {
                const float *row = a->g + (b0 + i) * L + l0 + t0;
                m[i] = b0 + i < B ? ld_part(row, nt) : (vf){0};
                if (b0 + i < B && ahead) __builtin_prefetch(row + LC);
            }
            transpose16(m);
            for (int i = 0; i < nt; i++) st(gT + (t0 + i) * BP + b0, m[i]);
        }
    }
}

static void bwd(const void *args, int64_t lo, int64_t hi, int tid) {
    const args_t *a = args;
    const int64_t BP = a->BP, d = a->d, k = a->k;
    float *xp = a->gv ? aligned_alloc(64, sizeof(float) * d * BP) : NULL;  /* xt [d, BP], zero-padded */
    if (xp) for (int64_t i = 0; i < d; i++) {
        memcpy(xp + i * BP, a->xt + i * a->B, sizeof(float) * a->B);
        memset(xp + i * BP + a->B, 0, sizeof(float) * (BP - a->B));
    }
    float *buf = a->gx ? a->gx + (int64_t)tid * d * BP : NULL;  /* this thread's [BP/16, d, 16] */
    if (buf) memset(buf, 0, sizeof(float) * d * BP);
    float *gT = aligned_alloc(64, sizeof(float) * LC * BP);
    int32_t *ids = malloc(sizeof(int32_t) * LC * k);
    vf *pv = aligned_alloc(64, sizeof(vf) * k);
    for (int64_t c = lo; c < hi; c++) {
        const int64_t l0 = c * LC, n = a->L - l0 < LC ? a->L - l0 : LC;
        chunk_ids(a, l0, n, ids);
        load_chunk(a, l0, n, gT);
        if (xp) for (int64_t t = 0; t < n; t++) {
            for (int64_t j = 0; j < k; j++) pv[j] = (vf){0};
            for (int64_t b0 = 0; b0 < BP;) {
                const int64_t w = BP - b0 >= 256 ? 256 : BP - b0 >= 64 ? 64 : 16;
                (w == 256 ? gv_16 : w == 64 ? gv_4 : gv_1)(gT + t * BP + b0, xp + b0, BP, ids + t * k, k, pv);
                b0 += w;
            }
            for (int64_t j = 0; j < k; j++) a->gv[(l0 + t) * k + j] = vsum(pv[j]);
        }
        if (buf) for (int64_t b0 = 0; b0 < BP; b0 += 16) gx_tile(buf + d * b0, gT + b0, BP, a->v + l0 * k, ids, n, k);
    }
    free(xp); free(gT); free(ids); free(pv);
}

static int64_t chunks(int64_t L) { return (L + LC - 1) / LC; }

/* xt [d, B], v [L, k], idx [L, k] (2 or 4 bytes) -> out [B, L] */
void ffi_forward(const float *xt, const float *v, const void *idx, int idx_bytes, float *out,
                 int64_t B, int64_t d, int64_t L, int64_t k, int nt) {
    args_t a = {xt, v, NULL, idx, out, NULL, NULL, B, (B + 15) / 16 * 16, d, L, k, idx_bytes};
    huge_pages(out, sizeof(float) * B * L);
    parallel(fwd, &a, chunks(L), nt);
}

/* g [B, L] -> gv [L, k] (if not NULL; needs xt [d, B]) and gx [threads, B16/16, d, 16] partial
   sums (if not NULL; needs v [L, k]; summed by the caller), in one pass over g */
void ffi_backward(const float *g, const float *xt, const float *v, const void *idx, int idx_bytes,
                  float *gv, float *gx, int64_t B, int64_t d, int64_t L, int64_t k, int nt) {
    args_t a = {xt, v, g, idx, NULL, gv, gx, B, (B + 15) / 16 * 16, d, L, k, idx_bytes};
    if (!gv && !gx) return;
    if (gv) huge_pages(gv, sizeof(float) * L * k);
    parallel(bwd, &a, chunks(L), nt);
}

/* how many partial buffers ffi_backward will write for these sizes */
int ffi_threads_used(int64_t L, int nt) { return threads_for(chunks(L), nt); }
"""

@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; ``None`` (with one warning) if that fails."""
    lib = native.load("ffi_cpu", SOURCE, "fixed fan-in")
    if lib is not None:
        i64, ptr, c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        native.declare(lib, ("ffi_forward",), [ptr, ptr, ptr, c_int, ptr, i64, i64, i64, i64, c_int])
        native.declare(lib, ("ffi_backward",), [ptr, ptr, ptr, ptr, c_int, ptr, ptr, i64, i64, i64, i64, c_int])
        native.declare(lib, ("ffi_threads_used",), [i64, c_int], c_int)
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
    return any(t is not None and t.dtype == torch.float64 for t in tensors)


def ffi_forward(x: torch.Tensor, values: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    if _wide(x, values):
        return reference.ffi_forward(x, values, indices)
    (batch, d), (num_labels, k) = x.shape, values.shape
    out = torch.empty(batch, num_labels, dtype=torch.float32)  # [B, L]
    if batch and num_labels:
        ids, xt, v = _ids(indices), _f32(x).t().contiguous(), _f32(values)  # xt [d, B]; named: live through the call
        library().ffi_forward(xt.data_ptr(), v.data_ptr(), ids.data_ptr(), ids.element_size(), out.data_ptr(),
                              batch, d, num_labels, k, torch.get_num_threads())
    return out.to(torch.result_type(x, values))


def ffi_grads(grad_out: torch.Tensor, x: torch.Tensor | None, values: torch.Tensor | None, indices: torch.Tensor,
              in_features: int, want_x: bool = True, want_values: bool = True):
    """``(grad_x [B, d] | None, grad_values [L, k] | None)`` from one pass over ``grad_out [B, L]``
    (``x`` is needed for ``grad_values`` only, ``values`` for ``grad_x`` only)."""
    if _wide(grad_out, x, values):
        return (reference.ffi_grad_input(grad_out, values, indices, in_features) if want_x else None,
                reference.ffi_grad_values(grad_out, x, indices) if want_values else None)
    batch, (num_labels, k) = grad_out.shape[0], indices.shape
    grad_x = grad_v = None
    if want_values:
        grad_v = torch.empty(num_labels, k) if batch else torch.zeros(num_labels, k)  # [L, k]
    if want_x:
        grad_x = torch.zeros(batch, in_features)  # [B, d]
    if batch and num_labels and (want_x or want_values):
        lib, threads, padded = library(), torch.get_num_threads(), -(-batch // 16) * 16
        g, ids = _f32(grad_out), _ids(indices)
        xt = _f32(x).t().contiguous() if want_values else None  # [d, B]
        v = _f32(values) if want_x else None
        parts = torch.empty(lib.ffi_threads_used(num_labels, threads), padded // 16, in_features, 16) \
            if want_x else None  # [T, B16/16, d, 16]
        lib.ffi_backward(g.data_ptr(), *(t.data_ptr() if t is not None else None for t in (xt, v)),
                         ids.data_ptr(), ids.element_size(),
                         *(t.data_ptr() if t is not None else None for t in (grad_v, parts)),
                         batch, in_features, num_labels, k, threads)
        if want_x:
            grad_x = parts.sum(0).permute(0, 2, 1).reshape(padded, in_features)[:batch]  # [B, d]
    if want_x:
        grad_x = grad_x.to(torch.result_type(grad_out, values)).contiguous()
    if want_values:
        grad_v = grad_v.to(torch.result_type(grad_out, x))
    return grad_x, grad_v


def ffi_grad_values(grad_out: torch.Tensor, x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    return ffi_grads(grad_out, x, None, indices, x.shape[1], want_x=False)[1]


def ffi_grad_input(grad_out: torch.Tensor, values: torch.Tensor, indices: torch.Tensor,
                   in_features: int) -> torch.Tensor:
    return ffi_grads(grad_out, None, values, indices, in_features, want_values=False)[0]


def _grads(grad_out, x, values, indices, want_x, want_values):
    return ffi_grads(grad_out, x, values, indices, x.shape[1], want_x, want_values)


# Above the reference (-1), below GPU backends; chosen for every CPU input it can compile for.
register_backend("cpu", ffi_forward, ffi_grad_input, ffi_grad_values, available=available, priority=5,
                 grads=_grads)
