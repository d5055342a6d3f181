/* Group-shared fixed fan-in on CPU: labels in groups of gs share one set of k input ids;
   a register-blocked GEMM per group, the backward per ~256-label super-chunk. Entry points:
   group_forward, group_backward, group_threads_used (loaded through ctypes by
   bench/kernels/cpu_group.py) and group_loss_step, the forward, a loss and both gradients per
   super-chunk in cache (bench/kernels/fused_loss.py). Design: docs/kernels.md. */
#include "common.h"
#include "loss.h"

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
   GX   S[i·is + r]    (values rows of consecutive labels, consecutive ids)
   FWDL as FWD, into a buffer read again soon (the fused loss step): plain stores */
enum { FWD, GV, GX, FWDL };

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
        const int64_t o = M == FWD || M == FWDL ? tab[i] : M == GV ? i : i * is;
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
STORE_VARIANT(FWDL, 12, 2) STORE_VARIANT(FWDL, 8, 2) STORE_VARIANT(FWDL, 4, 2) STORE_VARIANT(FWDL, 1, 2)
STORE_VARIANT(FWDL, 12, 1) STORE_VARIANT(FWDL, 8, 1) STORE_VARIANT(FWDL, 4, 1) STORE_VARIANT(FWDL, 1, 1)
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
static store_fn const FWDL_FNS[2][4] = {{store_FWDL_12_1, store_FWDL_8_1, store_FWDL_4_1, store_FWDL_1_1},
                                        {store_FWDL_12_2, store_FWDL_8_2, store_FWDL_4_2, store_FWDL_1_2}};
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
    (void)tid;  /* threads write disjoint groups: no per-thread buffer */
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

/* group G's backward from its columns of the gradient block cs (first label ls, rows SP floats
   apart): its value gradients (into a->gv) and its share of grad_x (into the thread's buf) */
static void one_group_backward(const gargs_t *a, int64_t G, const float *cs, int64_t ls, int64_t SP, const scratch_t *s,
                           float *gvT, float *gT, float *buf) {
    const int64_t B = a->B, k = a->k, GP = a->GP, BP = a->BP, L = a->L, gs = a->gs;
    const int64_t l0 = G * gs, n = L - l0 < gs ? L - l0 : gs;
    const float *cg = cs + (l0 - ls);  /* the group's columns: rows SP floats apart */
    group_ids(a, G, s->off, s->row);
    if (a->gv) {
        gemm_store(GV_FNS, 0, a->xt, s->off, k, B, cg, SP, n, gvT, GP);
        store_gv(gvT, GP, n, k, a->gv + l0 * k);
    }
    if (buf) {
        transpose_cols(cg, SP, B, GP, gT, BP);
        gemm_add(a->v + l0 * k, k, k, n, gT, BP, BP, buf, s->row);
    }
}

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
            one_group_backward(a, G, cs, ls, SP, &s, gvT, gT, buf);
        }
    }
    free(s.off);
}


/* ---- fused loss step -----------------------------------------------------------------------
   Per super-chunk, in the thread's caches: every group's scores into the [B, SP] block the
   backward reads (cs: there a copy of grad_out's columns), the loss pass turning them into
   scale · ∂l/∂z in place (targets: a [B, SP/16] bitmap), grad_bias the column sums, then each
   group's backward as in bwd. No [B, L] array exists. */
typedef struct {
    gargs_t a; const float *bias; float *gbias; const int64_t *row_ptr, *labels; pass_fn pass; float scale;
    double sum[MAX_THREADS];
} gloss_args_t;

static void loss_step(const void *args, int64_t lo, int64_t hi, int tid) {
    const gloss_args_t *la = args;
    const gargs_t *a = &la->a;
    const int64_t B = a->B, k = a->k, GP = a->GP, BP = a->BP, L = a->L, gs = a->gs, SC = per_super(gs);
    const int64_t SP = (SC * gs + 15) / 16 * 16 + 16, W = SP / 16;
    const int64_t G_all = groups(L, gs);
    scratch_t s = scratch(a, B * SP + GP * BP + k * GP + k * GP + SP + 16);
    float *cs = (float *)(((uintptr_t)s.f + 63) & ~(uintptr_t)63);
    float *gT = cs + B * SP, *gvT = gT + GP * BP, *vT = gvT + k * GP, *colsum = vT + k * GP;
    float *buf = a->gx ? a->gx + (int64_t)tid * a->d * BP : NULL;  /* this thread's [d, BP] */
    if (buf) memset(buf, 0, sizeof(float) * a->d * BP);
    memset(vT, 0, sizeof(float) * k * GP);
    uint16_t *bits = calloc((size_t)(B * W), sizeof(uint16_t));  /* [B, SP/16]: bit t of row b */
    const int64_t l_lo = lo * SC * gs, l_hi = hi * SC * gs < L ? hi * SC * gs : L;
    targets_t tg = bucket_targets(la->row_ptr, la->labels, B, l_lo, l_hi, SC * gs);
    double total = 0;
    for (int64_t S = lo; S < hi; S++) {
        const int64_t G0 = S * SC, G1 = G0 + SC < G_all ? G0 + SC : G_all;
        const int64_t ls = G0 * gs, ns = (G1 * gs < L ? G1 * gs : L) - ls, n16 = (ns + 15) / 16 * 16;
        for (int64_t G = G0; G < G1; G++) {
            const int64_t l0 = G * gs, n = L - l0 < gs ? L - l0 : gs;
            group_ids(a, G, s.off, NULL);
            for (int64_t t = 0; t < n; t++)
                for (int64_t j = 0; j < k; j++) vT[j * GP + t] = a->v[(l0 + t) * k + j];
            if (n < gs) for (int64_t j = 0; j < k; j++) memset(vT + j * GP + n, 0, sizeof(float) * (GP - n));
            gemm_store(FWDL_FNS, 1, a->xt, s.off, B, k, vT, GP, n, cs + (l0 - ls), SP);
        }
        mark_targets(&tg, S - lo, bits, W, 0, 1);
        total += la->pass(cs, SP, B, ns, bits, W, la->bias ? la->bias + ls : NULL,
                          la->gbias ? la->gbias + ls : NULL, colsum, la->scale);
        mark_targets(&tg, S - lo, bits, W, 0, 0);
        for (int64_t b = 0; b < B; b++) memset(cs + b * SP + n16, 0, sizeof(float) * (SP - n16));
        for (int64_t G = G0; G < G1; G++) one_group_backward(a, G, cs, ls, SP, &s, gvT, gT, buf);
    }
    ((gloss_args_t *)la)->sum[tid] = total;  /* each thread its own slot */
    free(tg.ent); free(tg.start); free(bits);
    free(s.off);
}

/* xt [d, B], v [L, k], idx [ceil(L/gs), k] (2 or 4 bytes), bias [L] (or NULL), targets row_ptr
   [B + 1] / labels [nnz] (int64) -> returns Σ loss(z, y) over [B, L] (unscaled); gv [L, k],
   gbias [L] and gx [threads, d, B16] partial sums (each if not NULL; gx summed by the caller) of
   scale · loss. An unknown loss id returns NaN and writes nothing. */
double group_loss_step(const float *xt, const float *v, const void *idx, int idx_bytes, const float *bias,
                       const int64_t *row_ptr, const int64_t *labels, int loss, float scale,
                       float *gv, float *gbias, float *gx, int64_t B, int64_t d, int64_t L, int64_t k, int64_t gs,
                       int nt) {
    const pass_fn pass = loss_pass_for(loss, 0);
    if (!pass) return __builtin_nan("");
    if (!B || !L) return 0;
    if (gv) huge_pages(gv, sizeof(float) * L * k);
    gloss_args_t *la = calloc(1, sizeof(gloss_args_t));
    la->a = (gargs_t){xt, v, NULL, idx, NULL, gv, gx, B, d, L, k, gs, (B + 15) / 16 * 16, (gs + 15) / 16 * 16, idx_bytes};
    la->bias = bias; la->gbias = gbias; la->row_ptr = row_ptr; la->labels = labels; la->pass = pass; la->scale = scale;
    parallel(loss_step, la, supers(L, gs), nt);
    double total = 0;
    for (int t = 0; t < threads_for(supers(L, gs), nt); t++) total += la->sum[t];
    free(la);
    return total;
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
