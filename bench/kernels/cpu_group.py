"""Compiled CPU kernels of the group-shared fixed fan-in op (``bench.kernels.group_fan_in``):
C built once with the system C compiler (``bench.kernels.native``), parallel over groups.

Per group ``G`` of n ≤ g labels ``[l0, l0 + n)`` sharing k input ids (B = batch, d = inputs):

- **forward** is a ``[B, k] × [k, g]`` GEMM: ``out[b, l0 + t] = Σ_j x[b, idx[G, j]] · vT[j, t]``.
  ``vT`` (the group's values, transposed and zero-padded to a multiple of 16 labels) is 4 KiB
  at k = g = 32; a register block of 12 batch rows × 32 labels (24 accumulators) broadcasts
  one ``x`` element per 2 FMAs straight from ``x [B, d]`` (768 KiB: L2) and writes 32
  contiguous floats per batch row of ``out [B, L]``: no gathered copy, no ``[L, B]``
  intermediate, no transpose.
- **backward** works through super-chunks of about 256 labels (8 groups at g = 32): their
  columns of ``grad_out [B, L]`` are copied as one 1 KiB run per row into ``[B, 256]`` (a group's
  128 bytes per row are too short a run for DRAM; at L = 2^17 the rows also alias in L1/L2), the
  next super-chunk's rows asked for while this one computes; then per group
  ``grad_values``: ``gvT[j, t] = Σ_b x[b, idx[G, j]] · gc[b, t]`` (12 ids × 32 labels per block,
  ``x`` broadcast again, the copy's rows as the GEMM's rows), transposed into
  ``grad_values [L, k]`` by 16 × 16 register transposes;
  ``grad_x``: the group's columns transposed into ``gT [g, B]``, then
  ``gxT[j, b] = Σ_t values[l0 + t, j] · gT[t, b]`` (6 ids × 64 batch columns), added
  to rows ``idx[G, j]`` of the thread's private ``[d, B16]`` buffer (L2; summed at the end, as
  ``cpu.py`` does), B16 = B rounded up to 16 so every row op is whole vectors.

FLOPs 2·B·L·k per pass, like ``ffi``; DRAM traffic is ``out`` written once (B·L·4 bytes) and
``grad_out`` read once for both gradients, plus ``values`` (L·k·4) and the ids (L·k·2 / g).
Per group and pass the only work besides the FMAs is one transpose of the group's ``grad_out``
columns and O(k·g) packing; every ``x`` element is loaded once per group (as a broadcast operand).
Labels are blocked 32/16 wide (one or two vectors), so g < 16 leaves lanes idle (g = 8: half)
and the per-group packing weighs more: small groups run well below large ones.
Math runs in float32 (bfloat16 upcast, results cast back); float64 runs the reference.
"""

from __future__ import annotations

import ctypes
import functools

import torch

from bench.kernels import buffers, native

SOURCE = native.PREAMBLE + r"""
#define MAXR 12  /* rows of a register block */
#define MAXV 4   /* 16-float vectors per row of a register block */

typedef struct {
    const float *xt, *v, *g; const void *idx; float *out, *gv, *gx;
    int64_t B, d, L, k, gs, BP, GP;
    int idx_bytes;
} gargs_t;

/* The three products, by where the scalar operand of step i, row r sits (so that no row needs
   a register of its own where rows are consecutive floats):
   FWD  S[tab[i] + r]  (xt rows of the group's ids, consecutive batch rows)
   GV   S[tab[r] + i]  (one xt row per id, stepping along the batch)
   GX   S[i·is + r]    (values rows of consecutive labels, consecutive ids) */
enum { FWD, GV, GX };

/* acc[r][q] = Σ_i scalar(i, r) · V[i·vs + 16q], r < R, q < NV (M, R, NV constant after
   inlining: the accumulators live in registers) */
AI void block(const int M, const int R, const int NV, vf acc[MAXR][MAXV], const float *S, const int64_t *tab,
              int64_t is, int64_t ni, const float *V, int64_t vs) {
    const float *rp[MAXR];
    _Pragma("GCC unroll 12") for (int r = 0; r < R; r++) {
        rp[r] = M == GV ? S + tab[r] : S + r;
        _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) acc[r][q] = (vf){0};
    }
    for (int64_t i = 0; i < ni; i++) {
        vf w[MAXV];
        const int64_t o = M == FWD ? tab[i] : M == GV ? i : i * is;
        _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) w[q] = ld(V + i * vs + 16 * q);
        _Pragma("GCC unroll 12") for (int r = 0; r < R; r++) {
            const vf s = bc(rp[r][o]);
            _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) acc[r][q] += s * w[q];
        }
    }
}

/* rows r of the result to o + r·os, the first `cols` (≤ 16·NV) floats of each */
#define STORE_VARIANT(M, R, NV) \
static void store_##M##_##R##_##NV(const float *S, const int64_t *tab, int64_t ni, const float *V, int64_t vs, \
                                   float *o, int64_t os, int64_t cols) { \
    vf acc[MAXR][MAXV]; \
    block(M, R, NV, acc, S, tab, 0, ni, V, vs); \
    _Pragma("GCC unroll 12") for (int r = 0; r < R; r++) { \
        if (cols == 16 * NV) { \
            _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) \
                if (M == FWD) st_out(o + r * os + 16 * q, acc[r][q]); else st(o + r * os + 16 * q, acc[r][q]); \
        } else { /* the last vector partly */ \
            _Pragma("GCC unroll 4") for (int q = 0; q < NV - 1; q++) st(o + r * os + 16 * q, acc[r][q]); \
            st_part(o + r * os + 16 * (NV - 1), acc[r][NV - 1], cols - 16 * (NV - 1)); \
        } \
    } \
}
/* rows r of the result added to buf + rows[r] + c0 (16·NV floats) */
#define ADD_VARIANT(R, NV) \
static void add_##R##_##NV(const float *S, int64_t is, int64_t ni, const float *V, int64_t vs, \
                           float *buf, const int64_t *rows, int64_t c0) { \
    vf acc[MAXR][MAXV]; \
    block(GX, R, NV, acc, S, NULL, is, ni, V, vs); \
    _Pragma("GCC unroll 12") for (int r = 0; r < R; r++) { \
        float *p = buf + rows[r] + c0; \
        _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) st(p + 16 * q, ld(p + 16 * q) + acc[r][q]); \
    } \
}
STORE_VARIANT(FWD, 12, 2) STORE_VARIANT(FWD, 8, 2) STORE_VARIANT(FWD, 4, 2) STORE_VARIANT(FWD, 1, 2)
STORE_VARIANT(FWD, 12, 1) STORE_VARIANT(FWD, 8, 1) STORE_VARIANT(FWD, 4, 1) STORE_VARIANT(FWD, 1, 1)
STORE_VARIANT(GV, 12, 2) STORE_VARIANT(GV, 8, 2) STORE_VARIANT(GV, 4, 2) STORE_VARIANT(GV, 1, 2)
STORE_VARIANT(GV, 12, 1) STORE_VARIANT(GV, 8, 1) STORE_VARIANT(GV, 4, 1) STORE_VARIANT(GV, 1, 1)
ADD_VARIANT(6, 4) ADD_VARIANT(2, 4) ADD_VARIANT(1, 4)
ADD_VARIANT(6, 1) ADD_VARIANT(2, 1) ADD_VARIANT(1, 1)

typedef void (*store_fn)(const float *, const int64_t *, int64_t, const float *, int64_t, float *, int64_t, int64_t);

/* o[r·os + c] = Σ_i scalar(i, r) · V[i·vs + c] for r < rows, c < cols (V readable to whole
   vectors past cols): 12/8/4/1-row blocks × 32/16-column blocks; fn[w][h]: w = wide, h = 12/8/4/1 rows */
static void gemm_store(store_fn const fn[2][4], int rows_move_S, const float *S, const int64_t *tab, int64_t rows,
                       int64_t ni, const float *V, int64_t vs, int64_t cols, float *o, int64_t os) {
    static const int height[4] = {12, 8, 4, 1};
    for (int64_t c = 0; c < cols; c += 32) {
        const int64_t nc = cols - c < 32 ? cols - c : 32; const int wide = nc > 16;
        int64_t r = 0;
        for (int h = 0; h < 4; h++)
            for (; r + height[h] <= rows; r += height[h])  /* FWD: rows step S; GV: rows step tab */
                fn[wide][h](rows_move_S ? S + r : S, rows_move_S ? tab : tab + r, ni, V + c, vs, o + r * os + c, os, nc);
    }
}

static store_fn const FWD_FNS[2][4] = {{store_FWD_12_1, store_FWD_8_1, store_FWD_4_1, store_FWD_1_1},
                                       {store_FWD_12_2, store_FWD_8_2, store_FWD_4_2, store_FWD_1_2}};
static store_fn const GV_FNS[2][4] = {{store_GV_12_1, store_GV_8_1, store_GV_4_1, store_GV_1_1},
                                      {store_GV_12_2, store_GV_8_2, store_GV_4_2, store_GV_1_2}};

/* buf[rows[r] + c] += Σ_i S[i·is + r] · V[i·vs + c] for r < nrows, c < cols (a multiple of
   16): 6/2/1-row blocks × 64/16-column blocks */
static void gemm_add(const float *S, int64_t is, int64_t nrows, int64_t ni, const float *V, int64_t vs,
                     int64_t cols, float *buf, const int64_t *rows) {
    for (int64_t c = 0; c < cols; c += 64) {
        const int wide = cols - c >= 64;
        for (int64_t c1 = c; c1 < (wide ? c + 64 : cols); c1 += wide ? 64 : 16) {
            int64_t r = 0;
            for (; r + 6 <= nrows; r += 6) (wide ? add_6_4 : add_6_1)(S + r, is, ni, V + c1, vs, buf, rows + r, c1);
            for (; r + 2 <= nrows; r += 2) (wide ? add_2_4 : add_2_1)(S + r, is, ni, V + c1, vs, buf, rows + r, c1);
            for (; r < nrows; r++) (wide ? add_1_4 : add_1_1)(S + r, is, ni, V + c1, vs, buf, rows + r, c1);
        }
    }
}

/* the group's ids as offsets of rows of xt [d, B] (off[j] = id·B) and of the [d, BP] buffer (row[j] = id·BP) */
static void group_ids(const gargs_t *a, int64_t G, int64_t *off, int64_t *row) {
    for (int64_t j = 0; j < a->k; j++) {
        const int64_t id = a->idx_bytes == 2 ? ((const int16_t *)a->idx)[G * a->k + j]
                                              : ((const int32_t *)a->idx)[G * a->k + j];
        off[j] = id * a->B;
        if (row) row[j] = id * a->BP;
    }
}

typedef struct { int64_t *off, *row; float *f; } scratch_t;

/* per-thread id tables and `floats` floats of work space (one allocation: free(s.off)) */
static scratch_t scratch(const gargs_t *a, int64_t floats) {
    scratch_t s = {0};
    s.off = malloc(sizeof(int64_t) * 2 * a->k + sizeof(float) * floats);
    s.row = s.off + a->k; s.f = (float *)(s.row + a->k);
    return s;
}

static void fwd(const void *args, int64_t lo, int64_t hi, int tid) {
    const gargs_t *a = args;
    const int64_t k = a->k, GP = a->GP;
    scratch_t s = scratch(a, k * GP);
    float *vT = s.f;  /* [k, GP] */
    memset(vT, 0, sizeof(float) * k * GP);
    for (int64_t G = lo; G < hi; G++) {
        const int64_t l0 = G * a->gs, n = a->L - l0 < a->gs ? a->L - l0 : a->gs;
        group_ids(a, G, s.off, NULL);
        for (int64_t t = 0; t < n; t++)
            for (int64_t j = 0; j < k; j++) vT[j * GP + t] = a->v[(l0 + t) * k + j];
        if (n < a->gs) for (int64_t j = 0; j < k; j++) memset(vT + j * GP + n, 0, sizeof(float) * (GP - n));
        gemm_store(FWD_FNS, 1, a->xt, s.off, a->B, k, vT, GP, n, a->out + l0, a->L);
    }
    fence_out();
    free(s.off);
}

/* gT[t, b] = cg[b·SP + t] for t < GP, b < BP (zero for b ≥ B): 16 × 16 register transposes
   (columns past the group's n hold the next group's values or zeros: the GEMM sums t < n only) */
static void transpose_cols(const float *cg, int64_t SP, int64_t B, int64_t GP, float *gT, int64_t BP) {
    for (int64_t b0 = 0; b0 < BP; b0 += 16)
        for (int64_t t0 = 0; t0 < GP; t0 += 16) {
            vf r[16];
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) r[i] = b0 + i < B ? ld(cg + (b0 + i) * SP + t0) : (vf){0};
            transpose16(r);
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) st(gT + (t0 + i) * BP + b0, r[i]);
        }
}

/* gv[t, j] = gvT[j, t] for t < n, j < k (gv rows k floats apart, gvT rows GP) */
static void store_gv(const float *gvT, int64_t GP, int64_t n, int64_t k, float *gv) {
    int64_t j0 = 0;
    if (n == GP) for (; j0 + 16 <= k; j0 += 16)
        for (int64_t t0 = 0; t0 < n; t0 += 16) {
            vf r[16];
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) r[i] = ld(gvT + (j0 + i) * GP + t0);
            transpose16(r);
            _Pragma("GCC unroll 16") for (int i = 0; i < 16; i++) st(gv + (t0 + i) * k + j0, r[i]);
        }
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = j0; j < k; j++) gv[t * k + j] = gvT[j * GP + t];
}

static int64_t groups(int64_t L, int64_t gs) { return (L + gs - 1) / gs; }

/* groups per super-chunk: about 256 labels, whose columns of g are read as one 1 KiB piece
   per row (a group's 128 bytes per row are too short for DRAM and the TLB) */
static int64_t per_super(int64_t gs) { return gs >= 256 ? 1 : 256 / gs; }

/* super-chunks of L labels: the backward's units of work */
static int64_t supers(int64_t L, int64_t gs) { return (groups(L, gs) + per_super(gs) - 1) / per_super(gs); }

static void bwd(const void *args, int64_t lo, int64_t hi, int tid) {
    const gargs_t *a = args;
    const int64_t B = a->B, k = a->k, GP = a->GP, BP = a->BP, L = a->L, gs = a->gs, SC = per_super(gs);
    const int64_t SP = (SC * gs + 15) / 16 * 16 + 16;  /* a row of the super-chunk copy, padded */
    const int64_t G_all = groups(L, gs);
    scratch_t s = scratch(a, B * SP + GP * BP + k * GP + 16);
    float *cs = (float *)(((uintptr_t)s.f + 63) & ~(uintptr_t)63);
    float *gT = cs + B * SP, *gvT = gT + GP * BP;  /* [B, SP], [GP, BP], [k, GP] */
    float *buf = a->gx ? a->gx + (int64_t)tid * a->d * BP : NULL;  /* this thread's [d, BP] */
    if (buf) memset(buf, 0, sizeof(float) * a->d * BP);
    for (int64_t S = lo; S < hi; S++) {
        const int64_t G0 = S * SC, G1 = G0 + SC < G_all ? G0 + SC : G_all;
        const int64_t ls = G0 * gs, ns = (G1 * gs < L ? G1 * gs : L) - ls;
        for (int64_t b = 0; b < B; b++) {
            memcpy(cs + b * SP, a->g + b * L + ls, sizeof(float) * ns);
            memset(cs + b * SP + ns, 0, sizeof(float) * (SP - ns));
        }
        /* the next super-chunk's rows, asked for spread over this one's groups */
        const int64_t nn = S + 1 < hi ? ((G1 + SC < G_all ? (G1 + SC) * gs : L) - G1 * gs) : 0;
        spread_t ahead = spread(a->g + G1 * gs, L, B, nn, G1 - G0);
        for (int64_t G = G0; G < G1; G++) {
            spread_step(&ahead);
            const int64_t l0 = G * gs, n = L - l0 < gs ? L - l0 : gs;
            const float *cg = cs + (l0 - ls);  /* the group's columns: rows SP floats apart */
            group_ids(a, G, s.off, s.row);
            if (a->gv) {
                gemm_store(GV_FNS, 0, a->xt, s.off, k, B, cg, SP, n, gvT, GP);
                store_gv(gvT, GP, n, k, a->gv + l0 * k);
            }
            if (buf) {
                transpose_cols(cg, SP, B, GP, gT, BP);
                gemm_add(a->v + l0 * k, k, k, n, gT, BP, BP, buf, s.row);
            }
        }
    }
    free(s.off);
}


/* xt [d, B], v [L, k], idx [ceil(L/gs), k] (2 or 4 bytes) -> out [B, L] */
void group_forward(const float *xt, const float *v, const void *idx, int idx_bytes, float *out,
                   int64_t B, int64_t d, int64_t L, int64_t k, int64_t gs, int nt) {
    gargs_t a = {xt, v, NULL, idx, out, NULL, NULL, B, d, L, k, gs, (B + 15) / 16 * 16, (gs + 15) / 16 * 16, idx_bytes};
    huge_pages(out, sizeof(float) * B * L);
    parallel(fwd, &a, groups(L, gs), nt);
}

/* g [B, L] -> gv [L, k] (if not NULL) and gx [threads, d, B16] partial sums (if not NULL; summed by the caller) */
void group_backward(const float *g, const float *xt, const float *v, const void *idx, int idx_bytes,
                    float *gv, float *gx, int64_t B, int64_t d, int64_t L, int64_t k, int64_t gs, int nt) {
    gargs_t a = {xt, v, g, idx, NULL, gv, gx, B, d, L, k, gs, (B + 15) / 16 * 16, (gs + 15) / 16 * 16, idx_bytes};
    if (gv) huge_pages(gv, sizeof(float) * L * k);
    parallel(bwd, &a, supers(L, gs), nt);
}

/* how many partial buffers group_backward will write */
int group_threads_used(int64_t L, int64_t gs, int nt) { return threads_for(supers(L, gs), nt); }
"""


@functools.lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The compiled kernels, built on first use; ``None`` (with one warning) if that fails."""
    lib = native.load("group_cpu", SOURCE, "group fan-in")
    if lib is not None:
        i64, ptr, c_int = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
        native.declare(lib, ("group_forward",), [ptr, ptr, ptr, c_int, ptr, i64, i64, i64, i64, i64, c_int])
        native.declare(lib, ("group_backward",), [ptr, ptr, ptr, ptr, c_int, ptr, ptr, i64, i64, i64, i64, i64, c_int])
        native.declare(lib, ("group_threads_used",), [i64, i64, c_int], c_int)
    return lib


def available(*tensors: torch.Tensor) -> bool:
    """CPU float32/bfloat16/float16 inputs, and the library builds (float64 stays on the reference)."""
    return all(t.device.type == "cpu" and t.dtype in (torch.float32, torch.bfloat16, torch.float16)
               for t in tensors) and library() is not None


def _ids(group_indices: torch.Tensor) -> torch.Tensor:
    """int16/int32 as they are; wider ids narrowed to int32 (input ids are < d < 2^31)."""
    if group_indices.dtype in (torch.int16, torch.int32):
        return group_indices.contiguous()
    return group_indices.to(torch.int32).contiguous()


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.to(torch.float32).contiguous()


def _xt(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32).t().contiguous()  # [d, B]: an input id's B values are one row


def group_forward(x, values, group_indices, group_size):
    """``x [B, d]``, ``values [L, k]``, ``group_indices [G, k]`` → ``[B, L]``."""
    (batch, d), (num_labels, k) = x.shape, values.shape
    out = buffers.empty(batch, num_labels)  # [B, L]: float32, on reused memory when free
    if batch and num_labels:
        xt, v, ids = _xt(x), _f32(values), _ids(group_indices)  # named: they must live through the call
        library().group_forward(xt.data_ptr(), v.data_ptr(), ids.data_ptr(), ids.element_size(), out.data_ptr(),
                                batch, d, num_labels, k, group_size, torch.get_num_threads())
    return out.to(torch.result_type(x, values))


def group_grads(grad_out, x, values, group_indices, group_size, want_x=True, want_values=True):
    """``(grad_x [B, d] | None, grad_values [L, k] | None)`` from ``grad_out [B, L]``, both from one
    pass over ``grad_out``."""
    (batch, d), (num_labels, k) = x.shape, values.shape
    grad_v = buffers.empty(num_labels, k) if want_values else None  # [L, k]: every entry written
    grad_x = torch.zeros(batch, d) if want_x else None  # [B, d]
    if want_values and not batch:
        grad_v.zero_()
    if batch and num_labels and (want_x or want_values):
        lib, threads = library(), torch.get_num_threads()
        g, xt, v, ids = _f32(grad_out), _xt(x), _f32(values), _ids(group_indices)
        padded = -(-batch // 16) * 16
        parts = torch.empty(lib.group_threads_used(num_labels, group_size, threads), d, padded) if want_x else None
        lib.group_backward(g.data_ptr(), xt.data_ptr(), v.data_ptr(), ids.data_ptr(), ids.element_size(),
                           grad_v.data_ptr() if want_values else None, parts.data_ptr() if want_x else None,
                           batch, d, num_labels, k, group_size, threads)
        if want_x:
            grad_x = parts.sum(0)[:, :batch].t()  # [d, B16] -> [B, d]
    grad_x = grad_x.to(x.dtype).contiguous() if want_x else None
    return grad_x, grad_v.to(values.dtype) if want_values else None
