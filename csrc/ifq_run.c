/* ifq_run.c: the runner: line buffers, the streaming schedule, and the kernel-set choice.
 *
 * Streaming: every map between layers (a stage) is a ring of rows. Asking for head row y pulls
 * the rows it needs from the stage it reads, which pulls from the stages it reads, down to the
 * canvas rows. A layer graph adds two kinds of stage: an upsample layer's output (each row made
 * from row y / 2 of its input, each pixel twice) and a concatenation (the rows of the named
 * inputs, their bit-planes joined along channels), the input of a layer that names several.
 * The heads' rows are asked for interleaved, in the order of the canvas row where they end, so
 * that all heads move down the image together.
 *
 * Ring sizes come from a dry run of that schedule at creation (the same pulls, nothing
 * computed): a stage's ring holds the most rows ever found between a row being read and the
 * newest row of the stage. In a chain that is the consumer's window (k rows, k + stride under
 * a 2x2 max-pool); a map read again by a later layer (conv3 by conv7 in the two-scale table)
 * keeps the rows that layer has still to read, never the whole map unless the schedule needs it.
 *
 * A band of head rows (ifq_run_band: a part of the first head and the same part of the others)
 * starts every map at the lowest row its windows read (band_starts) and pulls only the rows it
 * needs, so two runners can compute the two halves of the heads in two threads.
 *
 * Blank pixels: every stage row carries two column intervals (ifq_blank) known to be blank. On the
 * canvas they are the row's leading and trailing run of letterbox fill pixels (IFQ_BLANK); a
 * layer's output pixel is blank when every pixel of its window (all conv positions of a pool
 * window) lies inside the map and inside the blank interval of every window row. All blank pixels
 * of a map are then equal (by induction: the same layer on the same window), so the row functions
 * compute a layer's first blank pixel and copy it to the others: a letterboxed canvas's padding,
 * far from the image, costs a copy. The intervals may miss blank pixels (a fill-coloured hole in
 * the image), never include others, so they change what is computed, not any result.
 *
 * The rows themselves are computed by the kernel set's row functions (ifq_rows.h).
 */
#if defined(__linux__)
#define _GNU_SOURCE   /* syscall(): the AMX permission request */
#endif
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "ifq_internal.h"
#ifdef IFQ_HAVE_AMX
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif


/* --- kernel sets ------------------------------------------------------------------------- */

#ifdef IFQ_HAVE_X86
static int cpu_has(ifq_kernels k)
{
    __builtin_cpu_init();
    if (k == IFQ_KERNELS_AVX2)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vpopcntdq") &&
           __builtin_cpu_supports("avx512vnni");
}
#endif

#ifdef IFQ_HAVE_AMX
#define IFQ_ARCH_REQ_XCOMP_PERM 0x1023   /* Linux arch_prctl: ask for an extended state component */
#define IFQ_XFEATURE_XTILEDATA 18
/* AMX-TILE and AMX-INT8 in CPUID, the tile state enabled in XCR0, and Linux's permission for
 * this process to use tile data (asked once; a kernel before 5.16 refuses). */
static int amx_usable(void)
{
    static int usable = -1;
    if (usable >= 0)
        return usable;
    unsigned a, b, c, d, lo, hi;
    usable = 0;
    if (!cpu_has(IFQ_KERNELS_AVX512) || !__get_cpuid(1, &a, &b, &c, &d) || !(c & (1u << 27)))   /* OSXSAVE */
        return usable;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(d & (1u << 24)) || !(d & (1u << 25)))
        return usable;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & (3u << 17)) != (3u << 17))   /* XTILECFG, XTILEDATA */
        return usable;
    usable = syscall(SYS_arch_prctl, IFQ_ARCH_REQ_XCOMP_PERM, IFQ_XFEATURE_XTILEDATA) == 0;
    return usable;
}
#endif

static const ifq_kernel_set *kernel_set(ifq_kernels k)
{
    switch (k) {
    case IFQ_KERNELS_PORTABLE: return &ifq_kernels_portable;
#ifdef IFQ_HAVE_X86
    case IFQ_KERNELS_AVX2: return cpu_has(k) ? &ifq_kernels_avx2 : NULL;
    case IFQ_KERNELS_AVX512: return cpu_has(k) ? &ifq_kernels_avx512 : NULL;
#endif
#ifdef IFQ_HAVE_AMX
    case IFQ_KERNELS_AMX: return amx_usable() ? &ifq_kernels_amx : NULL;
#endif
#ifdef IFQ_HAVE_NEON
    case IFQ_KERNELS_NEON: return &ifq_kernels_neon;
#endif
    case IFQ_KERNELS_AUTO: {
        static const ifq_kernels best_first[] = {IFQ_KERNELS_AMX, IFQ_KERNELS_AVX512, IFQ_KERNELS_AVX2, IFQ_KERNELS_NEON};
        for (size_t i = 0; i < sizeof best_first / sizeof *best_first; i++) {
            const ifq_kernel_set *ks = kernel_set(best_first[i]);
            if (ks)
                return ks;
        }
        return &ifq_kernels_portable;
    }
    default: return NULL;
    }
}

int ifq_kernels_supported(ifq_kernels k) { return kernel_set(k) != NULL; }

const char *ifq_kernels_name(ifq_kernels k)
{
    static const char *const names[] = {"auto", "portable", "avx2", "avx512", "neon", "amx"};
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "unknown";
}

/* --- runner creation --------------------------------------------------------------------- */

void *ifq_block(ifq_runner *r, size_t count, size_t size)
{
    if (r->n_blocks == (int)(sizeof r->blocks / sizeof *r->blocks) || !count || count > SIZE_MAX / size)
        return NULL;
    void *p = calloc(count, size);
    if (p) {
        r->blocks[r->n_blocks++] = p;
        r->total_bytes += count * size;
    }
    return p;
}

#define IFQ_BLANK 0   /* the letterbox fill (netdef.LETTERBOX_FILL), in all three channels */

/* [*x0, *x1): the outputs x < n whose window of input columns [c0, c1) (c0 = x * step - lead,
 * c1 = c0 + width) lies inside [lo, hi). */
static void window_within(int lo, int hi, int step, int lead, int width, int n, int *x0, int *x1)
{
    /* c0 >= lo: x >= ceil((lo + lead) / step); c1 <= hi: x <= floor((hi + lead - width) / step) */
    int a = lo + lead <= 0 ? 0 : (lo + lead + step - 1) / step;
    int num = hi + lead - width, b = num < 0 ? -1 : num / step;
    *x0 = a;
    *x1 = b + 1 < n ? b + 1 : n;
    if (*x1 < *x0)
        *x1 = *x0;
}

static int window_rows(const ifq_layer *L) { return L->k + (L->pool ? L->stride : 0); }

/* The first input row that output row y reads (negative: its window starts in the zero
 * padding); an upsample's row y is its input's row y / 2. */
static int window_top(const ifq_layer *L, int y)
{
    return L->kind == IFQ_KIND_UPSAMPLE ? y / 2 : (L->pool ? 2 * y : y) * L->stride - L->k / 2;
}

static int code_words(int channels) { return (channels + IFQ_WORD_BITS - 1) / IFQ_WORD_BITS; }

/* A new stage of h x w; its index. */
static int add_stage(ifq_runner *r, int kind, int layer, int channels, int h, int w)
{
    ifq_stage *s = &r->st[r->n_stages];
    s->kind = kind;
    s->layer = layer;
    s->channels = channels;
    s->h = h;
    s->w = w;
    if (kind == IFQ_STAGE_CANVAS) {
        s->row_bytes = (size_t)w * 3;
    } else {
        s->words = code_words(channels);
        s->row_bytes = (size_t)w * 2 * s->words * sizeof(uint64_t);
    }
    return r->n_stages++;
}

/* A layer's output side from its input side along one axis (0: the map vanishes). */
static int out_side(const ifq_layer *L, int in)
{
    if (L->kind == IFQ_KIND_UPSAMPLE)
        return in > (1 << 15) ? 0 : 2 * in;
    if (L->kind == IFQ_KIND_HEAD)
        return in;
    return ((in - 1) / L->stride + 1) / (L->pool ? 2 : 1);
}

/* Stages of every map (sizes from the input width and height) and the head buffer's layout; 0 if
 * a map vanishes or concatenated maps differ in size. */
static int plan_stages(ifq_runner *r)
{
    const ifq_model *m = r->m;
    int h[IFQ_MAX_LAYERS], w[IFQ_MAX_LAYERS];   /* each layer's output height and width */
    r->n_stages = 0;
    add_stage(r, IFQ_STAGE_CANVAS, -1, 3, r->height, r->width);
    size_t offset = 0;
    for (int i = 0; i < m->n_layers; i++) {
        const ifq_layer *L = &m->layers[i];
        int in_h = i ? h[L->in[0]] : r->height, in_w = i ? w[L->in[0]] : r->width;
        for (int j = 1; j < L->n_in; j++)
            if (h[L->in[j]] != in_h || w[L->in[j]] != in_w)
                return 0;
        if (i == 0) {
            r->in_stage[i] = 0;
        } else if (L->n_in == 1) {
            r->in_stage[i] = r->out_stage[L->in[0]];
        } else {   /* the concatenation of the named inputs, in order */
            int c = add_stage(r, IFQ_STAGE_CONCAT, i, L->in_ch, in_h, in_w);
            r->st[c].n_src = L->n_in;
            for (int j = 0; j < L->n_in; j++)
                r->st[c].src[j] = r->out_stage[L->in[j]];
            r->in_stage[i] = c;
        }
        r->st[r->in_stage[i]].readers++;
        h[i] = out_side(L, in_h);
        w[i] = out_side(L, in_w);
        if (h[i] <= 0 || w[i] <= 0)
            return 0;
        if (L->kind == IFQ_KIND_HEAD) {
            r->out_stage[i] = -1;
            size_t n = (size_t)L->out_ch * h[i] * w[i];
            if (offset > SIZE_MAX / 8 - n)
                return 0;
            r->head_offset[i] = offset;
            offset += n;
        } else {
            r->out_stage[i] = add_stage(r, IFQ_STAGE_LAYER, i, L->out_ch, h[i], w[i]);
            r->st[r->out_stage[i]].n_src = 1;
            r->st[r->out_stage[i]].src[0] = r->in_stage[i];
        }
    }
    for (int j = 0; j < r->n_stages; j++)
        for (int k = 0; r->st[j].kind == IFQ_STAGE_CONCAT && k < r->st[j].n_src; k++)
            r->st[r->st[j].src[k]].readers++;
    r->head_offset[m->n_layers] = offset;   /* the whole head buffer */
    r->rows = h[m->heads[0]];
    return 1;
}

static ifq_status run(ifq_runner *r, int32_t *head, int y_begin, int y_end);

/* Anchors x cells of every head in `heads` on a width x height canvas (multiples of the total
 * stride): the most candidates, and boxes, a decode has. */
static uint64_t count_candidates(const ifq_model *m, int width, int height, uint64_t heads)
{
    uint64_t n = 0;
    for (int h = 0; h < m->n_heads; h++) {
        if (!(heads >> h & 1))
            continue;
        const ifq_layer *L = &m->layers[m->heads[h]];
        n += (uint64_t)(width / L->net_stride) * (uint64_t)(height / L->net_stride) * (uint64_t)L->n_anchors;
    }
    return n;
}

static ifq_status create(ifq_runner *r)
{
    const ifq_model *m = r->m;
    if (!plan_stages(r))
        return IFQ_ERR_ARGUMENT;
    r->planning = 1;   /* the schedule once, to size the rings; and a band from mid-map, whose */
    run(r, NULL, 0, r->rows);   /* first windows are not cut by the padding */
    run(r, NULL, r->rows / 2, r->rows);
    r->planning = 0;
    size_t max_row = 0, max_window = IFQ_MAX_INPUTS, max_out = 1, max_words = 1, max_patch = 1, in_pad = 1;
    for (int i = 0; i < r->n_stages; i++) {
        ifq_stage *s = &r->st[i];
        s->ring = s->need > 0 ? s->need : 1;
        if (!(s->rows = ifq_block(r, (size_t)s->ring * s->row_bytes + IFQ_ROW_SLACK, 1)))
            return IFQ_ERR_NOMEM;
        r->feature_bytes += (size_t)s->ring * s->row_bytes;
        if (!(s->blank = ifq_block(r, (size_t)s->ring, sizeof *s->blank)))
            return IFQ_ERR_NOMEM;
        r->feature_bytes += (size_t)s->ring * sizeof *s->blank;
        if (s->kind != IFQ_STAGE_CANVAS) {
            if (!(s->sums = ifq_block(r, (size_t)s->ring * s->w, sizeof *s->sums)))
                return IFQ_ERR_NOMEM;
            r->feature_bytes += (size_t)s->ring * s->w * sizeof *s->sums;
        }
        max_row = s->row_bytes > max_row ? s->row_bytes : max_row;
    }
    for (int i = 0; i < m->n_layers; i++) {
        const ifq_layer *L = &m->layers[i];
        max_window = (size_t)window_rows(L) > max_window ? (size_t)window_rows(L) : max_window;
        max_out = (size_t)L->out_ch + IFQ_CODE_LANES > max_out ? (size_t)L->out_ch + IFQ_CODE_LANES : max_out;
        max_words = (size_t)L->w_words > max_words ? (size_t)L->w_words : max_words;
        /* a fixed layer's gather writes a tap's unpacked words past its channels (ifq_rows.h) */
        const size_t spill = L->kind == IFQ_KIND_FIXED ? (size_t)IFQ_WORD_BITS * r->st[r->in_stage[i]].words : 0;
        const size_t patch = (size_t)L->k * L->row_len + spill;
        max_patch = patch > max_patch ? patch : max_patch;
        in_pad = (size_t)L->in_pad > in_pad ? (size_t)L->in_pad : in_pad;
    }
    for (int i = 0; i < m->n_layers; i++)   /* the blank pixel of each layer conv_row makes */
        if (m->layers[i].kind != IFQ_KIND_HEAD && m->layers[i].kind != IFQ_KIND_UPSAMPLE &&
            !(r->blank[i] = ifq_block(r, 2 * (size_t)r->st[r->out_stage[i]].words, sizeof(uint64_t))))
            return IFQ_ERR_NOMEM;
    const size_t n_cand = (size_t)count_candidates(m, r->width, r->height, r->heads);
    r->feature_bytes += ifq_runner_head_len(r) * sizeof(int32_t);   /* the caller's heads */
    if (!(r->window = ifq_block(r, max_window, sizeof *r->window)) || !(r->zero_row = ifq_block(r, max_row + IFQ_ROW_SLACK, 1)) ||
        !(r->window_sums = ifq_block(r, max_window, sizeof *r->window_sums)) ||
        !(r->patch = ifq_block(r, max_patch, 1)) ||
        !(r->first_rows = ifq_block(r, max_window, sizeof *r->first_rows)) ||
        !(r->acc32 = ifq_block(r, max_out, sizeof *r->acc32)) || !(r->best32 = ifq_block(r, max_out, sizeof *r->best32)) ||
        !(r->block32 = ifq_block(r, (size_t)m->layers[0].out_pad * IFQ_FIRST_BLOCK, sizeof *r->block32)) ||
        !(r->acc64 = ifq_block(r, max_out, sizeof *r->acc64)) || !(r->best64 = ifq_block(r, max_out, sizeof *r->best64)) ||
        !(r->x0 = ifq_block(r, max_words, sizeof *r->x0)) ||
        !(r->x1 = ifq_block(r, max_words, sizeof *r->x1)) ||
        !(r->codes = ifq_block(r, in_pad, 1)) || !(r->cand = ifq_block(r, n_cand, sizeof *r->cand)) ||
        !(r->cand_key = ifq_block(r, n_cand, sizeof *r->cand_key)) ||
        !(r->order = ifq_block(r, n_cand, sizeof *r->order)) ||
        !(r->vote = ifq_block(r, n_cand * IFQ_VOTE_FIELDS, sizeof *r->vote)))
        return IFQ_ERR_NOMEM;
    r->max_boxes = n_cand;
    if (r->ks->prepare && !r->ks->prepare(r))
        return IFQ_ERR_NOMEM;
    return IFQ_OK;
}

ifq_status ifq_runner_create(const ifq_model *m, int width, int height, ifq_kernels kernels, ifq_runner **out,
                             ifq_error *err)
{
    return ifq_runner_create_heads(m, width, height, kernels, IFQ_ALL_HEADS, out, err);
}

ifq_status ifq_runner_create_heads(const ifq_model *m, int width, int height, ifq_kernels kernels, uint64_t heads,
                                   ifq_runner **out, ifq_error *err)
{
    if (err)
        err->message[0] = 0;
    if (!m || !out) {
        if (err)
            strcpy(err->message, "ifq_runner_create: null argument");
        return IFQ_ERR_ARGUMENT;
    }
    *out = NULL;
    const ifq_kernel_set *ks = kernel_set(kernels);
    if (!ks) {
        if (err)
            strcpy(err->message, "the requested kernel set does not run on this CPU or build");
        return IFQ_ERR_ARGUMENT;
    }
    if (width <= 0 || width > (1 << 15) || width % m->stride || height <= 0 || height > (1 << 15) || height % m->stride) {
        if (err)
            strcpy(err->message, "input width and height must be positive multiples of the model's stride (at most 32768)");
        return IFQ_ERR_ARGUMENT;
    }
    if (m->n_heads < 64)
        heads &= ((uint64_t)1 << m->n_heads) - 1;
    if (!heads) {
        if (err)
            strcpy(err->message, "no head of the model asked for");
        return IFQ_ERR_ARGUMENT;
    }
    if (count_candidates(m, width, height, heads) > IFQ_MAX_CANDIDATES) {   /* decode's vote sums must fit int64 */
        if (err)
            strcpy(err->message, "input too large: more than 2^23 candidate boxes");
        return IFQ_ERR_ARGUMENT;
    }
    ifq_runner *r = calloc(1, sizeof *r);
    if (!r) {
        if (err)
            strcpy(err->message, "out of memory");
        return IFQ_ERR_NOMEM;
    }
    r->m = m;
    r->ks = ks;
    r->width = width;
    r->height = height;
    r->heads = heads;
    ifq_status st = create(r);
    if (st != IFQ_OK) {
        if (err)
            strcpy(err->message, st == IFQ_ERR_NOMEM ? "out of memory for the runner's buffers"
                                                     : "input size too small for this layer table");
        ifq_runner_free(r);
        return st;
    }
    *out = r;
    return IFQ_OK;
}

void ifq_runner_free(ifq_runner *r)
{
    if (!r)
        return;
    for (int i = 0; i < r->n_blocks; i++)
        free(r->blocks[i]);
    free(r);
}

ifq_kernels ifq_runner_kernels(const ifq_runner *r) { return r->ks->id; }
size_t ifq_runner_head_len(const ifq_runner *r) { return r->head_offset[r->m->n_layers]; }
size_t ifq_runner_max_boxes(const ifq_runner *r) { return r->max_boxes; }
size_t ifq_runner_feature_bytes(const ifq_runner *r) { return r->feature_bytes; }
size_t ifq_runner_total_bytes(const ifq_runner *r)
{
    return r->total_bytes + sizeof *r + ifq_runner_head_len(r) * sizeof(int32_t);
}

int ifq_model_num_heads(const ifq_model *m) { return m->n_heads; }
int ifq_model_head_anchors(const ifq_model *m, int h)
{
    return h >= 0 && h < m->n_heads ? m->layers[m->heads[h]].n_anchors : 0;
}
int ifq_model_head_stride(const ifq_model *m, int h)
{
    return h >= 0 && h < m->n_heads ? (int)m->layers[m->heads[h]].net_stride : 0;
}
int ifq_runner_head_rows(const ifq_runner *r, int h)
{
    return h >= 0 && h < r->m->n_heads ? r->st[r->in_stage[r->m->heads[h]]].h : 0;
}
int ifq_runner_head_cols(const ifq_runner *r, int h)
{
    return h >= 0 && h < r->m->n_heads ? r->st[r->in_stage[r->m->heads[h]]].w : 0;
}
size_t ifq_runner_head_offset(const ifq_runner *r, int h)
{
    return h >= 0 && h < r->m->n_heads ? r->head_offset[r->m->heads[h]] : ifq_runner_head_len(r);
}

/* --- layers, row by row ------------------------------------------------------------------ */

static void produce(ifq_runner *r, int i, int y);

/* Make sure rows first..last of stage i exist: each row is produced once, in order, from where
 * band_starts set the stage. A stage with one reader also skips the rows below `first` that were
 * never produced (a stride-2 1x1 layer reads every other row). */
static void ensure(ifq_runner *r, int i, int first, int last)
{
    ifq_stage *s = &r->st[i];
    if (s->next < first && s->readers == 1)
        s->next = first;
    while (s->next <= last)
        produce(r, i, s->next++);
}

/* Row y of stage i (produced already) for reading now; while planning, record how far back
 * it lies from the stage's newest row (the ring must reach it) and return NULL. */
static const uint8_t *read_row(ifq_runner *r, int i, int y)
{
    ifq_stage *s = &r->st[i];
    if (r->planning) {
        s->need = s->next - y > s->need ? s->next - y : s->need;
        return NULL;
    }
    return ifq_row_slot(s, y);
}

static ifq_blank *blank_slot(const ifq_runner *r, int i, int y)
{
    const ifq_stage *s = &r->st[i];
    return &s->blank[y % s->ring];
}

/* Intersect interval [*a0, *a1) with [b0, b1) (empty: a0 == a1). */
static void intersect(int *a0, int *a1, int b0, int b1)
{
    *a0 = b0 > *a0 ? b0 : *a0;
    *a1 = b1 < *a1 ? b1 : *a1;
    if (*a1 < *a0)
        *a1 = *a0;
}

/* Keep in *a only the columns b also knows to be blank. */
static void blank_meet(ifq_blank *a, const ifq_blank *b)
{
    intersect(&a->left[0], &a->left[1], b->left[0], b->left[1]);
    intersect(&a->right[0], &a->right[1], b->right[0], b->right[1]);
}

/* The blank intervals of a layer's output row (see the top of this file) from those of the rows
 * first .. first + span - 1 of its input stage. */
static ifq_blank blank_positions(const ifq_runner *r, const ifq_layer *L, int src, int first, int span, int out_w)
{
    const ifq_stage *in = &r->st[src];
    ifq_blank out = {{0, 0}, {0, 0}};
    if (first < 0 || first + span > in->h)   /* the window reaches the zero padding */
        return out;
    ifq_blank cols = {{0, in->w}, {0, in->w}};   /* columns blank in every row of the span */
    for (int j = 0; j < span; j++)
        blank_meet(&cols, blank_slot(r, src, first + j));
    const int per = L->pool ? 2 : 1, width = (per - 1) * L->stride + L->k;
    window_within(cols.left[0], cols.left[1], per * L->stride, L->k / 2, width, out_w, &out.left[0], &out.left[1]);
    window_within(cols.right[0], cols.right[1], per * L->stride, L->k / 2, width, out_w, &out.right[0], &out.right[1]);
    return out;
}

static const int32_t *read_sums(const ifq_runner *r, int i, int y)
{
    const ifq_stage *s = &r->st[i];
    return r->planning ? NULL : s->sums + (size_t)(y % s->ring) * s->w;
}

/* Upsample: row y is row y / 2 of the input with every pixel (bit-planes and code sum) twice. */
static void upsample_row(const ifq_stage *in, const uint8_t *src, const int32_t *src_sums, const ifq_stage *out,
                         uint8_t *dst, int32_t *dst_sums)
{
    const size_t px = 2 * (size_t)in->words;   /* words per pixel */
    const uint64_t *a = (const uint64_t *)src;
    uint64_t *b = (uint64_t *)dst;
    for (int x = 0; x < out->w; x++) {
        for (size_t j = 0; j < px; j++)
            b[(size_t)x * px + j] = a[(size_t)(x / 2) * px + j];
        dst_sums[x] = src_sums[x / 2];
    }
}

/* Concatenation: each pixel's channels are those of src[0], then src[1], ...: bit-plane p of
 * the output is the bit-planes p of the inputs joined, the code sums add. */
static void concat_row(ifq_runner *r, const ifq_stage *out, const uint8_t *const *src, const int32_t *const *sums,
                       uint8_t *dst, int32_t *dst_sums)
{
    const int nw = out->words;
    int aligned = 1;   /* every input but the last fills whole words: each word is a copy */
    for (int k = 0; k + 1 < out->n_src; k++)
        aligned &= r->st[out->src[k]].channels % IFQ_WORD_BITS == 0;
    for (int x = 0; x < out->w; x++) {
        uint64_t *px = (uint64_t *)dst + (size_t)x * 2 * nw;
        for (int p = 0; p < 2; p++) {
            uint64_t *word = px + (size_t)p * nw;
            if (aligned) {
                for (int k = 0, at = 0; k < out->n_src; k++) {
                    const int words = r->st[out->src[k]].words;
                    const uint64_t *q = (const uint64_t *)src[k] + ((size_t)x * 2 + p) * words;
                    for (int j = 0; j < words; j++)
                        word[at++] = q[j];
                }
                continue;
            }
            for (int j = 0; j < nw; j++)
                word[j] = 0;
            int at = 0;   /* output channel of the next input channel */
            for (int k = 0; k < out->n_src; k++) {
                const ifq_stage *in = &r->st[out->src[k]];
                const uint64_t *q = (const uint64_t *)src[k] + (size_t)x * 2 * in->words + (size_t)p * in->words;
                for (int j = 0; j < in->words; j++) {   /* padding bits past the channels are zero */
                    int shift = at % IFQ_WORD_BITS, n = in->channels - j * IFQ_WORD_BITS;
                    word[at / IFQ_WORD_BITS] |= q[j] << shift;
                    if (shift && at / IFQ_WORD_BITS + 1 < nw)
                        word[at / IFQ_WORD_BITS + 1] |= q[j] >> (IFQ_WORD_BITS - shift);
                    at += n < IFQ_WORD_BITS ? n : IFQ_WORD_BITS;
                }
            }
        }
        int32_t sum = 0;
        for (int k = 0; k < out->n_src; k++)
            sum += sums[k][x];
        dst_sums[x] = sum;
    }
}

/* Row y of stage i: pixels from the source (the canvas), a layer's output row from the rows of
 * its input stage, or a concatenation of its sources' row y. */
static void produce(ifq_runner *r, int i, int y)
{
    ifq_stage *s = &r->st[i];
    uint8_t *dst = r->planning ? NULL : ifq_row_slot(s, y);
    int32_t *dst_sums = r->planning || !s->sums ? NULL : s->sums + (size_t)(y % s->ring) * s->w;
    if (s->kind == IFQ_STAGE_CANVAS) {
        if (r->planning)
            return;
        if (r->canvas)
            memcpy(dst, r->canvas + (size_t)y * s->row_bytes, s->row_bytes);
        else
            r->source(r->user, y, dst);
        int lead = 0, trail = s->w;   /* the leading and trailing runs of fill pixels */
        while (lead < s->w && dst[3 * lead] == IFQ_BLANK && dst[3 * lead + 1] == IFQ_BLANK && dst[3 * lead + 2] == IFQ_BLANK)
            lead++;
        while (trail > lead && dst[3 * trail - 3] == IFQ_BLANK && dst[3 * trail - 2] == IFQ_BLANK &&
               dst[3 * trail - 1] == IFQ_BLANK)
            trail--;
        ifq_blank *b = blank_slot(r, i, y);
        *b = (ifq_blank){{0, lead}, {trail, s->w}};
        return;
    }
    if (s->kind == IFQ_STAGE_CONCAT) {
        const uint8_t *src[IFQ_MAX_INPUTS];
        const int32_t *sums[IFQ_MAX_INPUTS];
        for (int k = 0; k < s->n_src; k++)   /* all made first: making one may advance another */
            ensure(r, s->src[k], y, y);
        for (int k = 0; k < s->n_src; k++) {
            src[k] = read_row(r, s->src[k], y);
            sums[k] = read_sums(r, s->src[k], y);
        }
        if (r->planning)
            return;
        concat_row(r, s, src, sums, dst, dst_sums);
        ifq_blank *b = blank_slot(r, i, y);
        *b = (ifq_blank){{0, s->w}, {0, s->w}};
        for (int k = 0; k < s->n_src; k++)
            blank_meet(b, blank_slot(r, s->src[k], y));
        return;
    }
    const ifq_layer *L = &r->m->layers[s->layer];
    const int src = s->src[0];
    ifq_stage *in = &r->st[src];
    const int first = window_top(L, y);
    if (L->kind == IFQ_KIND_UPSAMPLE) {
        ensure(r, src, first, first);
        const uint8_t *row = read_row(r, src, first);
        if (r->planning)
            return;
        upsample_row(in, row, read_sums(r, src, first), s, dst, dst_sums);
        const ifq_blank *b = blank_slot(r, src, first);
        *blank_slot(r, i, y) = (ifq_blank){{2 * b->left[0], 2 * b->left[1]}, {2 * b->right[0], 2 * b->right[1]}};
        return;
    }
    const int span = window_rows(L);
    ensure(r, src, first > 0 ? first : 0, first + span - 1 < in->h - 1 ? first + span - 1 : in->h - 1);
    for (int j = 0; j < span; j++) {
        int yi = first + j;
        int inside = yi >= 0 && yi < in->h;
        const uint8_t *row = inside ? read_row(r, src, yi) : NULL;
        if (r->planning)
            continue;
        r->window[j] = inside ? row : r->zero_row;
        r->window_sums[j] = inside && in->sums ? read_sums(r, src, yi) : (const int32_t *)r->zero_row;
    }
    if (r->planning)
        return;
    ifq_blank *blank = blank_slot(r, i, y);
    *blank = blank_positions(r, L, src, first, span, s->w);
    r->blank_out = blank;
    r->ks->conv_row(r, L, in, s, dst, dst_sums);
}

/* Head h's row y into its part of the head buffer. */
static void head_row(ifq_runner *r, int h, int y, int32_t *head)
{
    const int layer = r->m->heads[h], src = r->in_stage[layer];
    ensure(r, src, y, y);
    const uint8_t *row = read_row(r, src, y);
    if (!r->planning)
        r->ks->head_row(r, &r->m->layers[layer], &r->st[src], row, y, head + r->head_offset[layer]);
}

/* Make each stage start at the lowest row a band reads, given each head's first row (rows below
 * it are never made; INT_MAX: the head makes no rows): produce's windows (window_top) walked
 * backwards, a concatenation reading its sources' row y; a stage read twice starts at the lower of
 * its readers' rows. */
static void band_starts(ifq_runner *r, const int *head_first)
{
    const ifq_model *m = r->m;
    int first[IFQ_MAX_STAGES];
    for (int i = 0; i < r->n_stages; i++)
        first[i] = INT_MAX;
    for (int h = 0; h < m->n_heads; h++) {
        const int in = r->in_stage[m->heads[h]];
        first[in] = head_first[h] < first[in] ? head_first[h] : first[in];
    }
    for (int i = m->n_layers - 1; i >= 0; i--) {   /* a stage's readers come later in the table */
        const ifq_layer *L = &m->layers[i];
        const int in = r->in_stage[i], out = r->out_stage[i];
        if (out >= 0 && first[out] != INT_MAX) {
            int from = window_top(L, first[out]);
            from = from > 0 ? from : 0;
            first[in] = from < first[in] ? from : first[in];
        }
        for (int k = 0; r->st[in].kind == IFQ_STAGE_CONCAT && k < r->st[in].n_src; k++) {
            const int src = r->st[in].src[k];
            first[src] = first[in] < first[src] ? first[in] : first[src];
        }
    }
    for (int i = 0; i < r->n_stages; i++)
        r->st[i].next = first[i] == INT_MAX ? 0 : first[i];
}

/* The heads' rows, interleaved: next, the row that ends highest in the canvas (row y of a head
 * of g rows ends at (y + 1) / g of it), ties in table order. A band is rows y_begin..y_end - 1
 * of the first head and the same part of every other head: rows y * g / g0 at its ends. */
static ifq_status run(ifq_runner *r, int32_t *head, int y_begin, int y_end)
{
    const ifq_model *m = r->m;
    if ((!head && !r->planning) || y_begin < 0 || y_end > r->rows || y_begin > y_end)
        return IFQ_ERR_ARGUMENT;
    int end[IFQ_MAX_LAYERS], first[IFQ_MAX_LAYERS];
    for (int h = 0; h < m->n_heads; h++) {
        const int64_t g = ifq_runner_head_rows(r, h);
        r->head_next[h] = (int)(y_begin * g / r->rows);
        end[h] = (int)(y_end * g / r->rows);
        if (!(r->heads >> h & 1))   /* not asked for: no rows, and none of the layers only it reads */
            end[h] = r->head_next[h];
        first[h] = end[h] > r->head_next[h] ? r->head_next[h] : INT_MAX;
    }
    band_starts(r, first);
    const int hooks = !r->planning;
    if (hooks && r->ks->run_begin)
        r->ks->run_begin();
    for (;;) {
        int best = -1;
        int64_t best_num = 0, best_den = 1;   /* (y + 1) / g of the best so far */
        for (int h = 0; h < m->n_heads; h++) {
            const int g = ifq_runner_head_rows(r, h);
            if (r->head_next[h] >= end[h])
                continue;
            int64_t num = r->head_next[h] + 1;
            if (best < 0 || num * best_den < best_num * g) {
                best = h;
                best_num = num;
                best_den = g;
            }
        }
        if (best < 0)
            break;
        head_row(r, best, r->head_next[best]++, head);
    }
    if (hooks && r->ks->run_end)
        r->ks->run_end();
    return IFQ_OK;
}

ifq_status ifq_run_rows(ifq_runner *r, ifq_row_source source, void *user, int32_t *head)
{
    if (!r || !source)
        return IFQ_ERR_ARGUMENT;
    r->canvas = NULL;
    r->source = source;
    r->user = user;
    return run(r, head, 0, r->rows);
}

ifq_status ifq_run(ifq_runner *r, const uint8_t *canvas, int32_t *head)
{
    return ifq_run_band(r, canvas, head, 0, r ? r->rows : 0);
}

ifq_status ifq_run_band(ifq_runner *r, const uint8_t *canvas, int32_t *head, int y_begin, int y_end)
{
    if (!r || !canvas)
        return IFQ_ERR_ARGUMENT;
    r->canvas = canvas;
    return run(r, head, y_begin, y_end);
}
