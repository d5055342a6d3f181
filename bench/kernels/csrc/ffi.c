/* Fixed fan-in (ffi) on CPU: out[b, l] = Σ_j v[l, j] · x[b, idx[l, j]] and both gradients,
   parallel over 256-label chunks. Entry points: ffi_forward, ffi_backward, ffi_threads_used
   (loaded through ctypes by bench/kernels/cpu.py) and ffi_loss_step, the forward, a loss and
   both gradients per chunk in cache (bench/kernels/fused_loss.py). Design: docs/kernels.md. */
#include "ffi_tiles.h"
#include "loss.h"

#define LC 256  /* labels per chunk: a thread's unit of work */

typedef struct {
    const float *xt, *v, *g; const void *idx; float *out, *gv, *gx;
    int64_t B, BP, d, L, k; int idx_bytes;
} args_t;

/* the ids of labels [l0, l0 + n) as int32 (ids[t·k + j]) */
static void chunk_ids(const args_t *a, int64_t l0, int64_t n, int32_t *ids) {
    ids_as_int32(a->idx, a->idx_bytes, a->k, l0, n, ids);
}

/* out[b, t] = stage[t, b] for b < B, t < n (out rows L floats apart): 16 × 16 blocks, along 16
   rows at a time (1 KiB runs per row: at L = 2^17 the rows alias in L1 and L2, so walking down
   the columns is slower) */
static void write_out(const float *stage, int64_t BP, int64_t B, int64_t n, float *out, int64_t L) {
    for (int64_t b0 = 0; b0 < B; b0 += 16) {
        const int64_t nb = B - b0 < 16 ? B - b0 : 16;
        for (int64_t t0 = 0; t0 < n; t0 += 16) {
            const int64_t nt = n - t0 < 16 ? n - t0 : 16;
            vf m[16];
            for (int i = 0; i < 16; i++) m[i] = i < nt ? ld(stage + (t0 + i) * BP + b0) : (vf){0};
            transpose16(m);
            for (int i = 0; i < nb; i++) {
                float *o = out + (b0 + i) * L + t0;
                if (nt == 16) st_out(o, m[i]); else st_part(o, m[i], nt);
            }
        }
    }
}


static void fwd(const void *args, int64_t lo, int64_t hi, int tid) {
    const args_t *a = args;
    (void)tid;  /* threads write disjoint labels: no per-thread buffer */
    const int64_t B = a->B, BP = a->BP, d = a->d, k = a->k;
    float *xp = pack_tiles(a->xt, a->B, a->BP, a->d), *stage = aligned_alloc(64, sizeof(float) * LC * BP);  /* stage [LC, BP] */
    int32_t *ids = malloc(sizeof(int32_t) * LC * k);
    for (int64_t c = lo; c < hi; c++) {
        const int64_t l0 = c * LC, n = a->L - l0 < LC ? a->L - l0 : LC;
        const float *w = a->v + l0 * k;
        chunk_ids(a, l0, n, ids);
        score_chunk(xp, d, B, BP, w, ids, n, k, stage);
        write_out(stage, BP, B, n, a->out + l0, a->L);
    }
    fence_out();
    free(xp); free(stage); free(ids);
}

/* ---- backward ----------------------------------------------------------------------------
   A chunk's columns of g [B, L] are read once, transposed into gT [n, BP] (a row of B floats
   per label, L2-resident), then the chunk's (label, slot) entries are ordered by input id
   (counting sort) and taken id by id:
   both gradients: the id's row of xp (xt zero-padded, [d, BP]) sits in registers and its row of
     the thread's private buffer ([d, BP]) in L1 while the id's entries stream their gT rows:
     grad_values[e] = gT[t, :] · xp[id, :] and buf[id, :] += v[t, j] · gT[t, :] (two entries per
     read-modify-write of the buffer row). Label by label instead, every FMA would fetch one xp
     and one buffer row from L2: the id order needs one line from L2 per two FMAs, not 1.5 per one
     (faster even with the sort included).
   grad_input alone: the same walk with the buffer row in registers;
   grad_values alone: per label, 16·NV batch columns of its gT row in registers, dotted with its
     k rows of xp (no sort: nothing is scattered). */
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

/* The m ≤ 65536 entries e = t·k + j of (part of) a chunk ordered by id: epos[start[i]] ..
   epos[start[i + 1] - 1] are the entries of id i (d + 1 starts; cur: d ints of scratch).
   16-bit positions keep the sort's scattered writes within 16 KiB (L1): three 32-bit arrays
   (position, gT row, value) would scatter over six times as much. */
static void sort_entries(const int32_t *ids, int64_t m, int64_t d, int32_t *start, int32_t *cur, uint16_t *epos) {
    memset(cur, 0, sizeof(int32_t) * d);
    for (int64_t e = 0; e < m; e++) cur[ids[e]]++;
    int32_t s = 0;
    for (int64_t i = 0; i < d; i++) { start[i] = s; s += cur[i]; cur[i] = s - cur[i]; }
    start[d] = s;
    for (int64_t e = 0; e < m; e++) epos[cur[ids[e]]++] = (uint16_t)e;
}

/* entry e's label t = e / k as a multiply (exact for e, k < 2^16): inv = ceil(2^32 / k) */
static inline int64_t label_of(uint32_t e, uint64_t inv) { return (int64_t)(((uint64_t)e * inv) >> 32); }

/* Both gradients from the entries epos[e0 .. e1) of one id, over the 16·NV batch columns from c0
   (vc: the values of the entries' labels, gT: their gradient rows):
   gvc[e] (+)= gT[t, cols] · xp[id, cols] (+= past the first column piece), br += v[e] · gT[t, cols] */
AI void both_id(const int NV, const float *xr_p, float *br, const float *gT, int64_t BP, int64_t c0,
                const uint16_t *epos, uint64_t inv, const float *vc, int32_t e0, int32_t e1, float *gvc) {
    vf xr[16];
    _Pragma("GCC unroll 16") for (int q = 0; q < NV; q++) xr[q] = ld(xr_p + 16 * q);
    int32_t e = e0;
    for (; e + 2 <= e1; e += 2) {  /* two entries per read-modify-write of the buffer row */
        const uint32_t pa = epos[e], pb = epos[e + 1];
        const float *ga = gT + label_of(pa, inv) * BP + c0, *gb = gT + label_of(pb, inv) * BP + c0;
        const vf sa = bc(vc[pa]), sb = bc(vc[pb]);
        vf a0 = (vf){0}, a1 = (vf){0}, b0 = (vf){0}, b1 = (vf){0};
        _Pragma("GCC unroll 16") for (int q = 0; q < NV; q++) {
            const vf p = ld(ga + 16 * q), r = ld(gb + 16 * q);
            if (q & 1) { a1 += p * xr[q]; b1 += r * xr[q]; } else { a0 += p * xr[q]; b0 += r * xr[q]; }
            st(br + 16 * q, ld(br + 16 * q) + sa * p + sb * r);
        }
        const float da = vsum(a0 + a1), db = vsum(b0 + b1);
        if (c0 == 0) { gvc[pa] = da; gvc[pb] = db; } else { gvc[pa] += da; gvc[pb] += db; }
    }
    for (; e < e1; e++) {
        const uint32_t pa = epos[e];
        const float *ga = gT + label_of(pa, inv) * BP + c0; const vf sa = bc(vc[pa]);
        vf a0 = (vf){0}, a1 = (vf){0};
        _Pragma("GCC unroll 16") for (int q = 0; q < NV; q++) {
            const vf p = ld(ga + 16 * q);
            if (q & 1) a1 += p * xr[q]; else a0 += p * xr[q];
            st(br + 16 * q, ld(br + 16 * q) + sa * p);
        }
        const float da = vsum(a0 + a1);
        if (c0 == 0) gvc[pa] = da; else gvc[pa] += da;
    }
}
#define BOTH_ARGS const float *x, float *b, const float *g, int64_t BP, int64_t c0, const uint16_t *p, uint64_t inv, \
                  const float *vc, int32_t e0, int32_t e1, float *gv
static void both_16(BOTH_ARGS) { both_id(16, x, b, g, BP, c0, p, inv, vc, e0, e1, gv); }
static void both_4(BOTH_ARGS) { both_id(4, x, b, g, BP, c0, p, inv, vc, e0, e1, gv); }
static void both_1(BOTH_ARGS) { both_id(1, x, b, g, BP, c0, p, inv, vc, e0, e1, gv); }

/* grad_input alone: br (16·NV columns from c0) += Σ over entries epos[e0 .. e1): v[e] · gT[t, cols] */
AI void gx_id(const int NV, float *br, const float *gT, int64_t BP, int64_t c0, const uint16_t *epos, uint64_t inv,
              const float *vc, int32_t e0, int32_t e1) {
    vf acc[16];
    _Pragma("GCC unroll 16") for (int q = 0; q < NV; q++) acc[q] = (vf){0};
    for (int32_t e = e0; e < e1; e++) {
        const uint32_t pa = epos[e];
        const float *ga = gT + label_of(pa, inv) * BP + c0; const vf sa = bc(vc[pa]);
        _Pragma("GCC unroll 16") for (int q = 0; q < NV; q++) acc[q] += sa * ld(ga + 16 * q);
    }
    _Pragma("GCC unroll 16") for (int q = 0; q < NV; q++) st(br + 16 * q, ld(br + 16 * q) + acc[q]);
}
#define GX_ARGS float *b, const float *g, int64_t BP, int64_t c0, const uint16_t *p, uint64_t inv, const float *vc, \
                int32_t e0, int32_t e1
static void gx_16(GX_ARGS) { gx_id(16, b, g, BP, c0, p, inv, vc, e0, e1); }
static void gx_4(GX_ARGS) { gx_id(4, b, g, BP, c0, p, inv, vc, e0, e1); }
static void gx_1(GX_ARGS) { gx_id(1, b, g, BP, c0, p, inv, vc, e0, e1); }

/* the widest column piece (256, 64 or 16 batch columns) that fits in BP - c0 */
static inline int64_t piece(int64_t BP, int64_t c0) { return BP - c0 >= 256 ? 256 : BP - c0 >= 64 ? 64 : 16; }

/* gT[t, b] = g[b, l0 + t] for t < n, b < BP (zero for b ≥ B), along 16 rows at a time (down the
   columns, 16 × 16 block by block, is slower: at L = 2^17 every row maps to the same L1/L2
   sets); without a grad_input walk to spread it over, the next chunk's part of
   each row of g is prefetched here: rows are L floats apart, which no hardware prefetcher follows */
static void load_chunk(const args_t *a, int64_t l0, int64_t n, float *gT) {
    const int64_t B = a->B, BP = a->BP, L = a->L;
    for (int64_t b0 = 0; b0 < BP; b0 += 16)
        for (int64_t t0 = 0; t0 < n; t0 += 16) {
            const int64_t nt = n - t0 < 16 ? n - t0 : 16, ahead = l0 + t0 + LC < L;
            vf m[16];
            for (int i = 0; i < 16; i++) {
                const float *row = a->g + (b0 + i) * L + l0 + t0;
                m[i] = b0 + i < B ? ld_part(row, nt) : (vf){0};
                if (!a->gx && b0 + i < B && ahead) __builtin_prefetch(row + LC);  /* else: during the id walk */
            }
            transpose16(m);
            for (int i = 0; i < nt; i++) st(gT + (t0 + i) * BP + b0, m[i]);
        }
}

/* Per-thread scratch of the backward walk (and of the fused loss step) */
typedef struct {
    float *xp, *buf, *gT; int32_t *ids, *start, *cur; uint16_t *epos; vf *pv;
    int64_t part; uint64_t inv;
} walk_t;

/* xp: xt zero-padded to [d, BP] (when `want_xp`), buf: this thread's [d, BP] grad_x buffer
   (when a->gx), gT [LC, BP], the chunk's ids and the sort's scratch */
static walk_t walk_scratch(const args_t *a, int tid, int want_xp) {
    const int64_t BP = a->BP, d = a->d, k = a->k;
    walk_t w;
    w.xp = want_xp ? aligned_alloc(64, sizeof(float) * d * BP) : NULL;  /* xt [d, BP], zero-padded */
    if (w.xp) for (int64_t i = 0; i < d; i++) {
        memcpy(w.xp + i * BP, a->xt + i * a->B, sizeof(float) * a->B);
        memset(w.xp + i * BP + a->B, 0, sizeof(float) * (BP - a->B));
    }
    w.buf = a->gx ? a->gx + (int64_t)tid * d * BP : NULL;  /* this thread's [d, BP] */
    if (w.buf) memset(w.buf, 0, sizeof(float) * d * BP);
    w.gT = aligned_alloc(64, sizeof(float) * LC * BP);
    w.ids = malloc(sizeof(int32_t) * (LC * k + 2 * d + 1)); w.start = w.ids + LC * k; w.cur = w.start + d + 1;
    /* the id walk sorts at most 65536 entries at a time (16-bit positions): `part` labels */
    w.part = k <= 256 ? LC : 65536 / k;
    w.epos = malloc(sizeof(uint16_t) * w.part * k);
    w.inv = (((uint64_t)1 << 32) + (uint64_t)k - 1) / (uint64_t)k;
    w.pv = aligned_alloc(64, sizeof(vf) * k);
    return w;
}

static void walk_free(walk_t *w) { free(w->xp); free(w->gT); free(w->ids); free(w->epos); free(w->pv); }

/* Both gradients (those asked for: w->buf, w->xp with a->gv) of the chunk of n labels from l0
   whose gradient rows are w->gT [n, BP] (ids in w->ids); while the walk runs, the next chunk's
   columns of a->g are prefetched when a->g is set */
AI void walk_chunk(const args_t *a, walk_t *w, int64_t l0, int64_t n) {
    const int64_t BP = a->BP, d = a->d, k = a->k, part = w->part;
    const float *xp = a->gv ? w->xp : NULL, *gT = w->gT;  /* xp: grad_values wanted */
    float *buf = w->buf;
    int32_t *ids = w->ids, *start = w->start;
    uint16_t *epos = w->epos;
    const uint64_t inv = w->inv;
    vf *pv = w->pv;
    if (buf) for (int64_t s0 = 0; s0 < n; s0 += part) {  /* id by id */
        const int64_t np = n - s0 < part ? n - s0 : part;
        sort_entries(ids + s0 * k, np * k, d, start, w->cur, epos);
        const float *vc = a->v + (l0 + s0) * k, *gTs = gT + s0 * BP;
        float *gvc = xp ? a->gv + (l0 + s0) * k : NULL;
        /* the next chunk's columns of g are asked for a few lines per id, spread over the
           walk, rather than all at once at the next load */
        const int64_t next = a->g && s0 + part >= n && l0 + LC < a->L ? (a->L - l0 - LC < LC ? a->L - l0 - LC : LC) : 0;
        spread_t ahead = spread(a->g ? a->g + l0 + LC : NULL, a->L, a->B, next, d);
        for (int64_t i = 0; i < d; i++) {
            spread_step(&ahead);
            const int32_t e0 = start[i], e1 = start[i + 1];
            if (e0 == e1) continue;
            for (int64_t c0 = 0, wd; c0 < BP; c0 += wd) {
                wd = piece(BP, c0);
                float *br = buf + i * BP + c0;
                if (xp) (wd == 256 ? both_16 : wd == 64 ? both_4 : both_1)(xp + i * BP + c0, br, gTs, BP, c0, epos, inv,
                                                                       vc, e0, e1, gvc);
                else (wd == 256 ? gx_16 : wd == 64 ? gx_4 : gx_1)(br, gTs, BP, c0, epos, inv, vc, e0, e1);
            }
        }
    } else for (int64_t t = 0; t < n; t++) {  /* grad_values alone: label by label */
        for (int64_t j = 0; j < k; j++) pv[j] = (vf){0};
        for (int64_t b0 = 0, wd; b0 < BP; b0 += wd) {
            wd = piece(BP, b0);
            (wd == 256 ? gv_16 : wd == 64 ? gv_4 : gv_1)(gT + t * BP + b0, xp + b0, BP, ids + t * k, k, pv);
        }
        for (int64_t j = 0; j < k; j++) a->gv[(l0 + t) * k + j] = vsum(pv[j]);
    }
}

static void bwd(const void *args, int64_t lo, int64_t hi, int tid) {
    const args_t *a = args;
    walk_t w = walk_scratch(a, tid, a->gv != NULL);
    for (int64_t c = lo; c < hi; c++) {
        const int64_t l0 = c * LC, n = a->L - l0 < LC ? a->L - l0 : LC;
        chunk_ids(a, l0, n, w.ids);
        load_chunk(a, l0, n, w.gT);
        walk_chunk(a, &w, l0, n);
    }
    walk_free(&w);
}

static int64_t chunks(int64_t L) { return (L + LC - 1) / LC; }

/* ---- fused loss step -----------------------------------------------------------------------
   Per chunk, in the thread's caches: the scores into gT [n, BP] (a label's row of B scores,
   register-blocked as the forward, reading the rows of xp [d, BP] directly), then the loss pass
   turns them into scale · ∂l/∂z in place (targets: a [LC, BP/16] bitmap of 16-bit words, 8 KiB),
   grad_bias is each row's sum, and the walk of the backward runs on gT as if it had been read
   from grad_out. No [B, L] array exists. */
AI void fwd_rows(const int R, const int NV, const float *X, int64_t xs, const float *w, const int32_t *id, int64_t k,
                 float *out, int64_t os) {
    vf acc[4][4];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) acc[r][q] = (vf){0};
    for (int64_t j = 0; j < k; j++) {
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const float *row = X + (int64_t)id[r * k + j] * xs; const vf s = bc(w[r * k + j]);
            _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) acc[r][q] += s * ld(row + 16 * q);
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 4") for (int q = 0; q < NV; q++) st(out + r * os + 16 * q, acc[r][q]);
}
#define ROWS_ARGS const float *X, int64_t xs, const float *w, const int32_t *id, int64_t k, float *o, int64_t os
static void rows_4_4(ROWS_ARGS) { fwd_rows(4, 4, X, xs, w, id, k, o, os); }
static void rows_1_4(ROWS_ARGS) { fwd_rows(1, 4, X, xs, w, id, k, o, os); }
static void rows_4_1(ROWS_ARGS) { fwd_rows(4, 1, X, xs, w, id, k, o, os); }
static void rows_1_1(ROWS_ARGS) { fwd_rows(1, 1, X, xs, w, id, k, o, os); }

typedef struct {
    args_t a; const float *bias; float *gbias; const int64_t *row_ptr, *labels; pass_fn pass; float scale;
    double sum[MAX_THREADS];
} loss_args_t;

static void loss_step(const void *args, int64_t lo, int64_t hi, int tid) {
    const loss_args_t *la = args;
    const args_t *a = &la->a;
    const int64_t B = a->B, BP = a->BP, k = a->k, n64 = B / 64 * 64, W = BP / 16;
    walk_t w = walk_scratch(a, tid, 1);  /* xp serves the forward too */
    uint16_t *bits = calloc((size_t)(LC * W), sizeof(uint16_t));  /* [LC, BP/16]: bit b of label t's row */
    targets_t tg = bucket_targets(la->row_ptr, la->labels, B, lo * LC, hi * LC < a->L ? hi * LC : a->L, LC);
    double total = 0;
    for (int64_t c = lo; c < hi; c++) {
        const int64_t l0 = c * LC, n = a->L - l0 < LC ? a->L - l0 : LC;
        const float *v = a->v + l0 * k;
        chunk_ids(a, l0, n, w.ids);
        for (int64_t c0 = 0; c0 < BP; c0 += c0 < n64 ? 64 : 16) {
            const int wide = c0 < n64; const float *X = w.xp + c0;
            float *o = w.gT + c0;
            int64_t t = 0;
            for (; t + 4 <= n; t += 4) (wide ? rows_4_4 : rows_4_1)(X, BP, v + t * k, w.ids + t * k, k, o + t * BP, BP);
            for (; t < n; t++) (wide ? rows_1_4 : rows_1_1)(X, BP, v + t * k, w.ids + t * k, k, o + t * BP, BP);
        }
        mark_targets(&tg, c - lo, bits, W, 1, 1);
        total += la->pass(w.gT, BP, n, B, bits, W, la->bias ? la->bias + l0 : NULL,
                          la->gbias ? la->gbias + l0 : NULL, NULL, la->scale);
        mark_targets(&tg, c - lo, bits, W, 1, 0);
        if (a->gv || a->gx) walk_chunk(a, &w, l0, n);
    }
    ((loss_args_t *)la)->sum[tid] = total;  /* each thread its own slot */
    free(tg.ent); free(tg.start); free(bits);
    walk_free(&w);
}

/* xt [d, B], v [L, k], idx [L, k] (2 or 4 bytes), bias [L] (or NULL), targets row_ptr [B + 1] /
   labels [nnz] (int64) -> returns Σ loss(z, y) over [B, L] (unscaled); gv [L, k], gbias [L] and
   gx [threads, d, B16] partial sums (each if not NULL; gx summed by the caller) of scale · loss.
   An unknown loss id returns NaN and writes nothing. */
double ffi_loss_step(const float *xt, const float *v, const void *idx, int idx_bytes, const float *bias,
                     const int64_t *row_ptr, const int64_t *labels, int loss, float scale,
                     float *gv, float *gbias, float *gx, int64_t B, int64_t d, int64_t L, int64_t k, int nt) {
    const pass_fn pass = loss_pass_for(loss, 1);
    if (!pass) return __builtin_nan("");
    if (!B || !L) return 0;
    if (gv) huge_pages(gv, sizeof(float) * L * k);
    loss_args_t *la = calloc(1, sizeof(loss_args_t));
    la->a = (args_t){xt, v, NULL, idx, NULL, gv, gx, B, (B + 15) / 16 * 16, d, L, k, idx_bytes};
    la->bias = bias; la->gbias = gbias; la->row_ptr = row_ptr; la->labels = labels; la->pass = pass; la->scale = scale;
    parallel(loss_step, la, chunks(L), nt);
    double total = 0;
    for (int t = 0; t < threads_for(chunks(L), nt); t++) total += la->sum[t];
    free(la);
    return total;
}

/* xt [d, B], v [L, k], idx [L, k] (2 or 4 bytes) -> out [B, L] */
void ffi_forward(const float *xt, const float *v, const void *idx, int idx_bytes, float *out,
                 int64_t B, int64_t d, int64_t L, int64_t k, int nt) {
    args_t a = {xt, v, NULL, idx, out, NULL, NULL, B, (B + 15) / 16 * 16, d, L, k, idx_bytes};
    huge_pages(out, sizeof(float) * B * L);
    parallel(fwd, &a, chunks(L), nt);
}

/* g [B, L] -> gv [L, k] (if not NULL; needs xt [d, B]) and gx [threads, d, B16] partial sums
   (if not NULL; needs v [L, k]; summed by the caller), in one pass over g */
void ffi_backward(const float *g, const float *xt, const float *v, const void *idx, int idx_bytes,
                  float *gv, float *gx, int64_t B, int64_t d, int64_t L, int64_t k, int nt) {
    args_t a = {xt, v, g, idx, NULL, gv, gx, B, (B + 15) / 16 * 16, d, L, k, idx_bytes};
    if (!gv && !gx) return;
    if (gv) huge_pages(gv, sizeof(float) * L * k);
    parallel(bwd, &a, chunks(L), nt);
}

/* how many partial buffers ffi_backward will write for these sizes */
int ffi_threads_used(int64_t L, int nt) { return threads_for(chunks(L), nt); }
