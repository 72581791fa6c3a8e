/* ifq_run.c: the runner: line buffers, the streaming schedule, and the kernel-set choice.
 *
 * Streaming: every map between layers is a ring of the few rows its consumer's window needs
 * (k rows, or k + stride under a 2x2 max-pool). Asking for head row y pulls the rows it needs
 * from the layer below, which pulls from the one below it, down to the canvas rows. So no map
 * (not the input, not conv1's output) is ever held whole: only the int32 head is.
 *
 * A band of head rows (ifq_run_band) pulls only the rows its own windows need, so two runners
 * can compute the two halves of one head in two threads.
 *
 * The rows themselves are computed by the kernel set's row functions (ifq_rows.h).
 */
#include <stdlib.h>
#include <string.h>

#include "ifq_internal.h"


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

static const ifq_kernel_set *kernel_set(ifq_kernels k)
{
    switch (k) {
    case IFQ_KERNELS_PORTABLE: return &ifq_kernels_portable;
#ifdef IFQ_HAVE_X86
    case IFQ_KERNELS_AVX2: return cpu_has(k) ? &ifq_kernels_avx2 : NULL;
    case IFQ_KERNELS_AVX512: return cpu_has(k) ? &ifq_kernels_avx512 : NULL;
#endif
#ifdef IFQ_HAVE_NEON
    case IFQ_KERNELS_NEON: return &ifq_kernels_neon;
#endif
    case IFQ_KERNELS_AUTO: {
        static const ifq_kernels best_first[] = {IFQ_KERNELS_AVX512, IFQ_KERNELS_AVX2, IFQ_KERNELS_NEON};
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
    static const char *const names[] = {"auto", "portable", "avx2", "avx512", "neon"};
    return (unsigned)k < sizeof names / sizeof *names ? names[k] : "unknown";
}

/* --- runner creation --------------------------------------------------------------------- */

/* One zeroed block owned by the runner; NULL on overflow or failure. */
static void *block(ifq_runner *r, size_t count, size_t size)
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

static int window_rows(const ifq_layer *L) { return L->k + (L->pool ? L->stride : 0); }

/* Map sizes and ring buffers of every stage; 0 if a size overflows or a map vanishes. */
static int plan_stages(ifq_runner *r)
{
    const ifq_model *m = r->m;
    int h = r->size, channels = 3;
    r->n_stages = m->n_layers;   /* the canvas plus the output of every layer but the head */
    for (int i = 0; i < r->n_stages; i++) {
        ifq_stage *s = &r->st[i];
        s->h = s->w = h;
        if (i == 0) {
            s->row_bytes = (size_t)h * 3;
        } else {
            s->words = (channels + IFQ_WORD_BITS - 1) / IFQ_WORD_BITS;
            s->row_bytes = (size_t)h * 2 * s->words * sizeof(uint64_t);
        }
        int need = window_rows(&m->layers[i]);
        s->ring = need < h ? need : h;
        const ifq_layer *L = &m->layers[i];
        channels = L->out_ch;
        h = (h - 1) / L->stride + 1;
        if (L->pool)
            h /= 2;
        if (h <= 0)
            return 0;
    }
    r->grid = h;
    return 1;
}

static ifq_status create(ifq_runner *r)
{
    const ifq_model *m = r->m;
    if (!plan_stages(r))
        return IFQ_ERR_ARGUMENT;
    size_t max_row = 0, max_window = 1, max_out = 1, max_words = 1, max_patch = 1;
    for (int i = 0; i < r->n_stages; i++) {
        ifq_stage *s = &r->st[i];
        if (!(s->rows = block(r, (size_t)s->ring * s->row_bytes + IFQ_ROW_SLACK, 1)))
            return IFQ_ERR_NOMEM;
        r->feature_bytes += (size_t)s->ring * s->row_bytes;
        if (i > 0) {
            if (!(s->sums = block(r, (size_t)s->ring * s->w, sizeof *s->sums)))
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
        size_t patch = (size_t)L->k * L->row_len;
        max_patch = patch > max_patch ? patch : max_patch;
    }
    const ifq_layer *head = &m->layers[m->n_layers - 1];
    size_t cells = (size_t)r->grid * r->grid;
    size_t n_cand = cells * (size_t)m->n_anchors;
    r->feature_bytes += n_cand * IFQ_VALUES_PER_ANCHOR * sizeof(int32_t);   /* the caller's head */
    if (!(r->window = block(r, max_window, sizeof *r->window)) || !(r->zero_row = block(r, max_row + IFQ_ROW_SLACK, 1)) ||
        !(r->window_sums = block(r, max_window, sizeof *r->window_sums)) ||
        !(r->patch = block(r, max_patch, 1)) ||
        !(r->first_rows = block(r, max_window, sizeof *r->first_rows)) ||
        !(r->acc32 = block(r, max_out, sizeof *r->acc32)) || !(r->best32 = block(r, max_out, sizeof *r->best32)) ||
        !(r->acc64 = block(r, max_out, sizeof *r->acc64)) || !(r->best64 = block(r, max_out, sizeof *r->best64)) ||
        !(r->x0 = block(r, max_words, sizeof *r->x0)) ||
        !(r->x1 = block(r, max_words, sizeof *r->x1)) ||
        !(r->codes = block(r, (size_t)head->in_pad, 1)) || !(r->cand = block(r, n_cand, sizeof *r->cand)) ||
        !(r->order = block(r, n_cand, sizeof *r->order)))
        return IFQ_ERR_NOMEM;
    return IFQ_OK;
}

ifq_status ifq_runner_create(const ifq_model *m, int size, ifq_kernels kernels, ifq_runner **out, ifq_error *err)
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
    if (size <= 0 || size > (1 << 15) || size % m->stride) {
        if (err)
            strcpy(err->message, "input size must be a positive multiple of the model's stride (at most 32768)");
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
    r->size = size;
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
int ifq_runner_grid(const ifq_runner *r) { return r->grid; }
size_t ifq_runner_head_len(const ifq_runner *r)
{
    return (size_t)r->m->n_anchors * IFQ_VALUES_PER_ANCHOR * r->grid * r->grid;
}
size_t ifq_runner_max_boxes(const ifq_runner *r) { return (size_t)r->m->n_anchors * r->grid * r->grid; }
size_t ifq_runner_feature_bytes(const ifq_runner *r) { return r->feature_bytes; }
size_t ifq_runner_total_bytes(const ifq_runner *r)
{
    return r->total_bytes + sizeof *r + ifq_runner_head_len(r) * sizeof(int32_t);
}

/* --- layers, row by row ------------------------------------------------------------------ */

static void produce(ifq_runner *r, int i, int y);

/* Make sure rows up to y of stage i exist (they are produced once each, in order). */
/* Make sure rows first..last of stage i exist: each row is produced once, in order; rows
 * below `first` that were never produced are skipped (a band of the head starts mid-map). */
static void ensure(ifq_runner *r, int i, int first, int last)
{
    ifq_stage *s = &r->st[i];
    if (s->next < first)
        s->next = first;
    while (s->next <= last)
        produce(r, i, s->next++);
}


/* Row y of stage i: pixels from the source (i = 0), or layer i - 1 on the rows it needs. */
static void produce(ifq_runner *r, int i, int y)
{
    ifq_stage *s = &r->st[i];
    uint8_t *dst = ifq_row_slot(s, y);
    if (i == 0) {
        if (r->canvas)
            memcpy(dst, r->canvas + (size_t)y * s->row_bytes, s->row_bytes);
        else
            r->source(r->user, y, dst);
        return;
    }
    const ifq_layer *L = &r->m->layers[i - 1];
    ifq_stage *in = &r->st[i - 1];
    int first = (L->pool ? 2 * y : y) * L->stride - L->k / 2, span = window_rows(L);
    ensure(r, i - 1, first > 0 ? first : 0, first + span - 1 < in->h - 1 ? first + span - 1 : in->h - 1);
    for (int j = 0; j < span; j++) {
        int yi = first + j;
        int inside = yi >= 0 && yi < in->h;
        r->window[j] = inside ? ifq_row_slot(in, yi) : r->zero_row;
        r->window_sums[j] = inside && i > 1 ? in->sums + (size_t)(yi % in->ring) * in->w : (const int32_t *)r->zero_row;
    }
    r->ks->conv_row(r, L, in, s, dst, s->sums + (size_t)(y % s->ring) * s->w);
}

static ifq_status run(ifq_runner *r, int32_t *head, int y_begin, int y_end)
{
    if (!head || y_begin < 0 || y_end > r->grid || y_begin > y_end)
        return IFQ_ERR_ARGUMENT;
    for (int i = 0; i < r->n_stages; i++)
        r->st[i].next = 0;
    for (int y = y_begin; y < y_end; y++) {
        ensure(r, r->n_stages - 1, y, y);
        r->ks->head_row(r, y, head);
    }
    return IFQ_OK;
}

ifq_status ifq_run_rows(ifq_runner *r, ifq_row_source source, void *user, int32_t *head)
{
    if (!r || !source)
        return IFQ_ERR_ARGUMENT;
    r->canvas = NULL;
    r->source = source;
    r->user = user;
    return run(r, head, 0, r->grid);
}

ifq_status ifq_run(ifq_runner *r, const uint8_t *canvas, int32_t *head)
{
    return ifq_run_band(r, canvas, head, 0, r ? r->grid : 0);
}

ifq_status ifq_run_band(ifq_runner *r, const uint8_t *canvas, int32_t *head, int y_begin, int y_end)
{
    if (!r || !canvas)
        return IFQ_ERR_ARGUMENT;
    r->canvas = canvas;
    return run(r, head, y_begin, y_end);
}

/* The decode needs the runner's candidate buffers (ifq_decode.c). */
ifq_box *ifq_runner_candidates(ifq_runner *r, uint32_t **order, const ifq_model **m)
{
    *order = r->order;
    *m = r->m;
    return r->cand;
}
