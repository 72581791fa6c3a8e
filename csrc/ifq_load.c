/* ifq_load.c: parse and check an .ifq file (docs/MODEL_FORMAT.md), as engine/modelfile.py does.
 *
 * The file is untrusted: every read is bounds-checked against the payload, every size is
 * checked before it is multiplied, and every refusal is an ifq_status plus a one-line message
 * (the same checks, in the same order, as the Python reader, so both refuse the same files).
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ifq_internal.h"

#define HEADER_BYTES 16
#define CRC_BYTES 4
#define DESCRIPTION_V1_BYTES 16
#define DESCRIPTION_BYTES 8
#define ROW_V1_BYTES 24
#define ROW_BYTES 32           /* version 2: the version-1 row, the number of inputs, 4 input rows, 3 spare */
#define MAX_INPUTS 4
#define MAX_ANCHORS_V1 64
#define HEAD_SCALE_BYTES 8     /* version-2 head sections start with i32 multiplier, u8 shift, 3 spare */
#define NAME_BYTES 16
#define ALIGN 4
#define MAX_CHANNELS (1 << 15)
#define MAX_INPUT_SIZE 4096
#define MAX_METADATA (1u << 16)
#define ANCHOR_FRAC_BITS 16
#define MAX_ANCHOR_CELLS 64
#define MAX_STRIDE 64
#define MIN_OUT_SHIFT 17
#define MAX_OUT_SHIFT 62
#define PIXEL_MAX 255
#define CODE_MAX 3
#define FIXED_WEIGHT_MAX 127
#define FLAG_SEPARATED 1u
#define INT32_LIMIT ((int64_t)1 << 31)

static const char *const KIND_NAMES[] = {"first", "hidden", "head", "upsample", "fixed"};
static const int VERSION_KINDS[] = {0, 3, 4, 5};   /* kinds each format version allows (the first n) */
#define UPSAMPLE 2                     /* an upsample layer repeats each code 2x2 */
#define STRIDE_CAP ((int64_t)1 << 40)  /* strides saturate here: far above any valid one, no overflow */

typedef struct {
    const uint8_t *data;
    size_t pos, end;
    ifq_error *err;
} reader;

static ifq_status fail(ifq_error *err, ifq_status code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

static uint32_t u16_at(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t u32_at(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static int32_t i32_at(const uint8_t *p)
{
    uint32_t u = u32_at(p);   /* two's complement without implementation-defined conversion */
    return u <= INT32_MAX ? (int32_t)u : (int32_t)(u - 0x80000000u) - INT32_MAX - 1;
}
static int32_t i16_at(const uint8_t *p)
{
    uint32_t u = u16_at(p);
    return u < 0x8000u ? (int32_t)u : (int32_t)u - 0x10000;
}

/* CRC-32 (IEEE 802.3, reflected 0xEDB88320, as zlib), bitwise: loading is not the hot path. */
static uint32_t crc32_ieee(const uint8_t *p, size_t n)
{
    uint32_t crc = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) {
        crc ^= p[i];
        for (int b = 0; b < 8; b++)
            crc = (crc >> 1) ^ (0xEDB88320u & (0u - (crc & 1u)));
    }
    return crc ^ 0xFFFFFFFFu;
}

/* Pointer to the next n bytes, or NULL with the message "<what> runs past the end of the payload". */
static const uint8_t *take(reader *r, uint64_t n, const char *what, const char *layer)
{
    if (n > r->end - r->pos) {
        fail(r->err, IFQ_ERR_INVALID, "%s%s%s runs past the end of the payload",
             layer ? "layer " : "", layer ? layer : "", what);
        return NULL;
    }
    const uint8_t *p = r->data + r->pos;
    r->pos += (size_t)n;
    return p;
}

static int64_t input_max(int kind) { return kind == IFQ_KIND_FIRST ? PIXEL_MAX : CODE_MAX; }
static int64_t weight_max(int kind) { return kind == IFQ_KIND_HIDDEN ? 1 : FIXED_WEIGHT_MAX; }

/* n anchors, i32 w and h each (in the description, or a version-2 head section), into *out. */
static ifq_status read_anchors(reader *r, int n, int32_t **out, const char *layer)
{
    const uint8_t *a = take(r, (uint64_t)n * 8, layer ? " anchors" : "anchors", layer);
    if (!a)
        return IFQ_ERR_INVALID;
    *out = calloc((size_t)n * 2, sizeof **out);
    if (!*out)
        return fail(r->err, IFQ_ERR_NOMEM, "out of memory");
    for (int i = 0; i < 2 * n; i++)
        (*out)[i] = i32_at(a + 4 * i);
    return IFQ_OK;
}

/* Layer table rows: names, kinds, sizes (the checks of modelfile._read_table). */
static ifq_status read_table(reader *r, ifq_model *m)
{
    const int row_bytes = m->version == 1 ? ROW_V1_BYTES : ROW_BYTES;
    const int kinds = VERSION_KINDS[m->version];
    for (int i = 0; i < m->n_layers; i++) {
        const uint8_t *row = take(r, (uint64_t)row_bytes, "layer table row", NULL);
        if (!row)
            return IFQ_ERR_INVALID;
        ifq_layer *L = &m->layers[i];
        int len = NAME_BYTES;
        while (len > 0 && row[len - 1] == 0)   /* NUL padding; a NUL inside the name is refused */
            len--;
        int ok = len > 0;
        for (int c = 0; c < len; c++)
            ok &= row[c] >= 0x20 && row[c] < 0x7F;
        if (!ok)
            return fail(r->err, IFQ_ERR_INVALID, "layer table row %d: malformed name", i);
        memcpy(L->name, row, (size_t)len);
        L->name[len] = 0;
        L->kind = row[16];
        L->k = row[17];
        L->stride = row[18];
        L->pool = row[19];
        L->in_ch = (int)u16_at(row + 20);
        L->out_ch = (int)u16_at(row + 22);
        if (L->kind >= kinds || !(L->in_ch > 0 && L->in_ch < MAX_CHANNELS && L->out_ch > 0 &&
                                  L->out_ch < MAX_CHANNELS) || L->k == 0 || L->stride == 0)
            return fail(r->err, IFQ_ERR_INVALID,
                        "layer %s: malformed table row (kind %d, kernel %d, stride %d, channels %d -> %d)",
                        L->name, L->kind, L->k, L->stride, L->in_ch, L->out_ch);
        int n_in = m->version == 1 ? 0 : row[24], bad = n_in > MAX_INPUTS;   /* version 2: named inputs */
        for (int j = 0; j < MAX_INPUTS && m->version > 1; j++)
            bad |= j < n_in ? row[25 + j] >= i : row[25 + j] != 0;
        if (bad)
            return fail(r->err, IFQ_ERR_INVALID, "layer %s: malformed inputs (each must be an earlier row)", L->name);
        L->n_in = n_in ? n_in : 1;   /* none named: the row above (the canvas for the first row) */
        L->in[0] = i - 1;
        for (int j = 0; j < n_in; j++)
            L->in[j] = row[25 + j];
    }
    return IFQ_OK;
}

/* The rules of netdef.check_layers / check_input_size / in_channels and IntegerModel.check on
 * the table: kinds, wiring (every input an earlier non-head layer, every non-head layer read,
 * concatenated inputs of one stride), shapes, and the input size a multiple of the coarsest stride. */
static ifq_status check_table(ifq_model *m, ifq_error *err)
{
    int n = m->n_layers, used[IFQ_MAX_LAYERS] = {0};
    if (m->layers[0].kind != IFQ_KIND_FIRST)
        return fail(err, IFQ_ERR_INVALID, "invalid model: layer table must start with a first layer");
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            if (strcmp(m->layers[i].name, m->layers[j].name) == 0)
                return fail(err, IFQ_ERR_INVALID, "invalid model: layer names must be unique");
    if (m->layers[n - 1].kind != IFQ_KIND_HEAD)
        return fail(err, IFQ_ERR_INVALID, "invalid model: layer table must end with a head");
    for (int i = 1; i < n; i++)
        for (int j = 0; j < m->layers[i].n_in; j++)
            used[m->layers[i].in[j]] = 1;
    int64_t max_stride = 1;
    m->n_heads = 0;
    for (int i = 0; i < n; i++) {
        ifq_layer *L = &m->layers[i];
        int64_t in_ch = i ? 0 : 3, in_stride = i ? m->layers[L->in[0]].net_stride : 1;
        for (int j = 0; j < L->n_in && i; j++) {
            const ifq_layer *src = &m->layers[L->in[j]];
            if (src->kind == IFQ_KIND_HEAD)
                return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: reads a head", L->name);
            if (src->net_stride != in_stride)
                return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: concatenated inputs have different strides",
                            L->name);
            in_ch += src->out_ch;
        }
        if (i && L->kind == IFQ_KIND_FIRST)
            return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: only the first layer may be a first layer",
                        L->name);
        if (L->kind == IFQ_KIND_HEAD && used[i])
            return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: a head cannot feed another layer", L->name);
        if (L->kind != IFQ_KIND_HEAD && !used[i])
            return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: its output is not used", L->name);
        if (L->k % 2 != 1)
            return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: kernel %d must be odd", L->name, L->k);
        if (L->pool != 0 && L->pool != 2)
            return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: pool must be 0 or 2, not %d", L->name, L->pool);
        if (L->kind == IFQ_KIND_UPSAMPLE && (L->out_ch != in_ch || L->k != 1 || L->stride != 1 || L->pool))
            return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: an upsample layer keeps its channels and has "
                        "no kernel, stride or pool", L->name);
        if (L->kind == IFQ_KIND_HEAD) {
            L->n_anchors = m->version == 1 ? m->n_anchors : L->out_ch / IFQ_VALUES_PER_ANCHOR;
            if (L->n_anchors < 1)
                return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: a head needs anchors", L->name);
            if (L->out_ch != L->n_anchors * IFQ_VALUES_PER_ANCHOR)
                return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: %d channels, expected %d anchors x 5",
                            L->name, L->out_ch, L->n_anchors);
            if (L->k != 1 || L->stride != 1 || L->pool)
                return fail(err, IFQ_ERR_INVALID,
                            "invalid model: layer %s: the head must be a 1x1 stride-1 conv without pool", L->name);
            m->heads[m->n_heads++] = i;
        }
        if (L->in_ch != in_ch)
            return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: %d input channels, the table implies %lld",
                        L->name, L->in_ch, (long long)in_ch);
        if (L->kind == IFQ_KIND_UPSAMPLE)
            L->net_stride = in_stride / UPSAMPLE;
        else
            L->net_stride = in_stride * L->stride * (L->pool ? L->pool : 1);
        L->net_stride = L->net_stride < STRIDE_CAP ? L->net_stride : STRIDE_CAP;
        max_stride = L->net_stride > max_stride ? L->net_stride : max_stride;
        L->acc_bound = L->kind == IFQ_KIND_UPSAMPLE ? 0
                       : (int64_t)L->in_ch * L->k * L->k * input_max(L->kind) * weight_max(L->kind);
    }
    if (m->input_size <= 0 || m->input_size % max_stride)
        return fail(err, IFQ_ERR_INVALID, "invalid model: input size %d must be a positive multiple of %lld",
                    m->input_size, (long long)max_stride);
    m->stride = (int)max_stride;   /* at most the input size, itself below 2^16 */
    m->n_anchors = m->layers[m->heads[0]].n_anchors;
    return IFQ_OK;
}

/* Packed bits, most significant first: value i of a `bits`-long array; unused bits must be 0. */
static int bit_at(const uint8_t *p, uint64_t i) { return (p[i >> 3] >> (7 - (i & 7))) & 1; }
static int padding_bits_zero(const uint8_t *p, uint64_t n)
{
    return n % 8 == 0 || (p[n / 8] & (0xFFu >> (n % 8))) == 0;
}

static void *alloc_array(size_t count, size_t size)
{
    return count && count <= SIZE_MAX / size ? calloc(count, size) : NULL;
}

/* int8 weights as the file holds them (first, fixed and head layers) lie in [-127, 127]: no -128. */
static ifq_status check_int8_weights(reader *r, const uint8_t *w, uint64_t n, const char *layer)
{
    for (uint64_t i = 0; i < n; i++)
        if (w[i] == 0x80)
            return fail(r->err, IFQ_ERR_INVALID, "invalid model: layer %s: weights outside [-127, 127]", layer);
    return IFQ_OK;
}

/* Thresholds, weights and signs of a first, hidden or fixed layer (modelfile._read_section + checks). */
static ifq_status read_conv(reader *r, ifq_layer *L, int t_bytes)
{
    const int O = L->out_ch, I = L->in_ch, k = L->k;
    const uint64_t n_w = (uint64_t)O * I * k * k;
    const uint8_t *t = take(r, (uint64_t)O * IFQ_N_THRESHOLDS * t_bytes, " thresholds", L->name);
    if (!t)
        return IFQ_ERR_INVALID;
    const uint8_t *w = take(r, L->kind == IFQ_KIND_HIDDEN ? (n_w + 7) / 8 : n_w, " weights", L->name);
    if (!w)
        return IFQ_ERR_INVALID;
    if (L->kind == IFQ_KIND_HIDDEN && !padding_bits_zero(w, n_w))
        return fail(r->err, IFQ_ERR_INVALID, "layer %s weights: unused padding bits are not zero", L->name);
    const uint8_t *s = take(r, ((uint64_t)O + 7) / 8, " signs", L->name);
    if (!s)
        return IFQ_ERR_INVALID;
    if (!padding_bits_zero(s, (uint64_t)O))
        return fail(r->err, IFQ_ERR_INVALID, "layer %s signs: unused padding bits are not zero", L->name);

    L->thresholds = alloc_array((size_t)O * IFQ_N_THRESHOLDS, sizeof(int32_t));
    L->negate = alloc_array((size_t)O, 1);
    if (!L->thresholds || !L->negate)
        return fail(r->err, IFQ_ERR_NOMEM, "layer %s: out of memory", L->name);
    L->codes_pad = (O + IFQ_CODE_LANES - 1) / IFQ_CODE_LANES * IFQ_CODE_LANES;
    L->t_lanes = alloc_array((size_t)L->codes_pad * IFQ_N_THRESHOLDS, sizeof(int32_t));
    L->neg_lanes = alloc_array((size_t)L->codes_pad, sizeof(int32_t));
    if (!L->t_lanes || !L->neg_lanes)
        return fail(r->err, IFQ_ERR_NOMEM, "layer %s: out of memory", L->name);
    for (int i = 0; i < O * IFQ_N_THRESHOLDS; i++)
        L->thresholds[i] = t_bytes == 4 ? i32_at(t + 4 * i) : i16_at(t + 2 * i);
    for (int o = 0; o < L->codes_pad; o++)
        for (int j = 0; j < IFQ_N_THRESHOLDS; j++)
            L->t_lanes[(size_t)j * L->codes_pad + o] = o < O ? L->thresholds[o * IFQ_N_THRESHOLDS + j] : INT32_MAX;
    for (int o = 0; o < O; o++) {
        L->negate[o] = (uint8_t)bit_at(s, (uint64_t)o);
        L->neg_lanes[o] = -(int32_t)L->negate[o];
    }

    const int kk = k * k;
    if (L->kind != IFQ_KIND_HIDDEN) {   /* first, fixed: int8 weights for first_dot */
        if (check_int8_weights(r, w, n_w, L->name) != IFQ_OK)
            return IFQ_ERR_INVALID;
        L->row_len = (k * I + 3) / 4 * 4;
        L->out_pad = (O + IFQ_OUT_ALIGN - 1) / IFQ_OUT_ALIGN * IFQ_OUT_ALIGN;
        L->w_pairs = alloc_array((size_t)k * L->row_len * L->out_pad, sizeof(int16_t));
        L->w_quads = alloc_array((size_t)k * L->row_len * L->out_pad, sizeof(int8_t));
        if (!L->w_pairs || !L->w_quads)
            return fail(r->err, IFQ_ERR_NOMEM, "layer %s: out of memory", L->name);
        for (int o = 0; o < O; o++)
            for (int c = 0; c < I; c++)
                for (int j = 0; j < kk; j++) {
                    int b = w[((size_t)o * I + c) * kk + j];
                    int v = b < 128 ? b : b - 256;   /* i8 without an implementation-defined cast */
                    size_t at = (size_t)(j / k) * L->row_len + (size_t)(j % k) * I + c;   /* (ky, kx, c) */
                    L->w_pairs[((at / 2) * L->out_pad + o) * 2 + at % 2] = (int16_t)v;
                    L->w_quads[((at / 4) * L->out_pad + o) * 4 + at % 4] = (int8_t)v;
                }
    } else {
        L->w_words = (kk * I + IFQ_WORD_BITS - 1) / IFQ_WORD_BITS;
        L->groups = (O + IFQ_LANES - 1) / IFQ_LANES;
        L->w_bits = alloc_array((size_t)L->groups * L->w_words * IFQ_LANES, sizeof(uint64_t));
        if (!L->w_bits)
            return fail(r->err, IFQ_ERR_NOMEM, "layer %s: out of memory", L->name);
        for (int o = 0; o < O; o++)
            for (int c = 0; c < I; c++)
                for (int j = 0; j < kk; j++)
                    if (bit_at(w, ((uint64_t)o * I + c) * kk + j)) {
                        size_t at = (size_t)j * I + c;
                        size_t word = ((size_t)(o / IFQ_LANES) * L->w_words + at / 64) * IFQ_LANES + o % IFQ_LANES;
                        L->w_bits[word] |= (uint64_t)1 << (at % 64);
                    }
    }
    /* thresholds: within the accumulator range and non-decreasing per channel */
    const int64_t R = L->acc_bound;
    for (int o = 0; o < O; o++)
        for (int j = 0; j < IFQ_N_THRESHOLDS; j++) {
            int64_t v = L->thresholds[o * IFQ_N_THRESHOLDS + j];
            if (v < -R - 1 || v > R)
                return fail(r->err, IFQ_ERR_INVALID,
                            "invalid model: layer %s: thresholds outside the accumulator range [%lld, %lld]",
                            L->name, (long long)(-R - 1), (long long)R);
            if (j && v < L->thresholds[o * IFQ_N_THRESHOLDS + j - 1])
                return fail(r->err, IFQ_ERR_INVALID,
                            "invalid model: layer %s: thresholds must be non-decreasing per channel", L->name);
        }
    return IFQ_OK;
}

/* Bias and weights of the head. */
static ifq_status read_head(reader *r, ifq_model *m, ifq_layer *L)
{
    const int O = L->out_ch, I = L->in_ch;
    if (m->version > 1) {   /* version 2: the head's output scale and anchors open its section */
        const uint8_t *scale = take(r, HEAD_SCALE_BYTES, " output scale", L->name);
        if (!scale)
            return IFQ_ERR_INVALID;
        L->out_multiplier = i32_at(scale);
        L->out_shift = scale[4];
        ifq_status st = read_anchors(r, L->n_anchors, &L->anchors, L->name);
        if (st != IFQ_OK)
            return st;
    }
    const uint8_t *b = take(r, (uint64_t)O * 4, " bias", L->name);
    if (!b)
        return IFQ_ERR_INVALID;
    const uint8_t *w = take(r, (uint64_t)O * I, " weights", L->name);
    if (!w || check_int8_weights(r, w, (uint64_t)O * I, L->name) != IFQ_OK)
        return IFQ_ERR_INVALID;
    L->in_pad = (I + IFQ_HEAD_IN_ALIGN - 1) / IFQ_HEAD_IN_ALIGN * IFQ_HEAD_IN_ALIGN;
    L->bias = alloc_array((size_t)O, sizeof(int32_t));
    L->w_head = alloc_array((size_t)O * L->in_pad, 1);
    if (!L->bias || !L->w_head)
        return fail(r->err, IFQ_ERR_NOMEM, "layer %s: out of memory", L->name);
    int64_t max_bias = 0;
    for (int o = 0; o < O; o++) {
        L->bias[o] = i32_at(b + 4 * o);
        int64_t a = L->bias[o] < 0 ? -(int64_t)L->bias[o] : L->bias[o];
        max_bias = a > max_bias ? a : max_bias;
        for (int c = 0; c < I; c++) {
            int v = w[(size_t)o * I + c] < 128 ? w[(size_t)o * I + c] : w[(size_t)o * I + c] - 256;
            L->w_head[(size_t)o * L->in_pad + c] = (int8_t)v;
        }
    }
    if (max_bias + L->acc_bound >= INT32_LIMIT)
        return fail(r->err, IFQ_ERR_INVALID, "invalid model: layer %s: accumulator plus bias can overflow int32", L->name);
    return IFQ_OK;
}

/* One layer section: length, kinds of arrays, arrays, zero padding to its announced end. */
static ifq_status read_section(reader *r, ifq_model *m, ifq_layer *L)
{
    size_t start = r->pos;
    const uint8_t *h = take(r, 8, " section header", L->name);
    if (!h)
        return IFQ_ERR_INVALID;
    uint32_t size = u32_at(h);
    int w_bits = h[4], t_bytes = h[5];
    uint64_t end = (uint64_t)start + 4 + size;
    if (size % ALIGN || size < 4 || end > r->end || u16_at(h + 6))
        return fail(r->err, IFQ_ERR_INVALID, "layer %s: malformed section header (length %u)", L->name, size);
    ifq_status st;
    if (L->kind == IFQ_KIND_UPSAMPLE) {
        if (w_bits != 0 || t_bytes != 0)
            return fail(r->err, IFQ_ERR_INVALID, "layer %s: a upsample section holds no arrays", L->name);
        st = IFQ_OK;
    } else if (L->kind == IFQ_KIND_HEAD) {
        if (w_bits != 8 || t_bytes != 0)
            return fail(r->err, IFQ_ERR_INVALID, "layer %s: head section must hold 8-bit weights and no thresholds",
                        L->name);
        st = read_head(r, m, L);
    } else {
        int want_bits = L->kind == IFQ_KIND_HIDDEN ? 1 : 8;
        int t_ok = L->kind == IFQ_KIND_HIDDEN ? (t_bytes == 2 || t_bytes == 4) : t_bytes == 4;
        if (w_bits != want_bits || !t_ok)
            return fail(r->err, IFQ_ERR_INVALID, "layer %s: %d-bit weights / %d-byte thresholds are not valid for a %s layer",
                        L->name, w_bits, t_bytes, KIND_NAMES[L->kind]);
        st = read_conv(r, L, t_bytes);
    }
    if (st != IFQ_OK)
        return st;
    if (r->pos > end)
        return fail(r->err, IFQ_ERR_INVALID, "layer %s padding runs past the end of the payload", L->name);
    size_t pad = (size_t)(end - r->pos);
    int nonzero = 0;
    for (size_t i = 0; i < pad; i++)
        nonzero |= r->data[r->pos + i];
    r->pos = (size_t)end;
    if (pad >= ALIGN || nonzero || (r->pos - start) % ALIGN)
        return fail(r->err, IFQ_ERR_INVALID, "layer %s: section length %u does not match its contents", L->name, size);
    return IFQ_OK;
}

static ifq_status read_metadata(reader *r)
{
    const uint8_t *p = take(r, 4, "metadata length", NULL);
    if (!p)
        return IFQ_ERR_INVALID;
    uint32_t n = u32_at(p);
    if (n > MAX_METADATA)
        return fail(r->err, IFQ_ERR_INVALID, "metadata of %u bytes exceeds %u", n, MAX_METADATA);
    const uint8_t *text = take(r, n, "metadata", NULL);
    if (!text)
        return IFQ_ERR_INVALID;
    const uint8_t *pad = take(r, (ALIGN - n % ALIGN) % ALIGN, "metadata padding", NULL);
    if (!pad)
        return IFQ_ERR_INVALID;
    for (uint32_t i = 0; i < (ALIGN - n % ALIGN) % ALIGN; i++)
        if (pad[i])
            return fail(r->err, IFQ_ERR_INVALID, "metadata padding is not zero");
    if (!ifq_json_object_ok(text, n))
        return fail(r->err, IFQ_ERR_INVALID, "metadata is not a UTF-8 JSON object");
    return IFQ_OK;
}

/* Header checks in the Python reader's order: empty, magic, length, version, size, CRC, flags. */
static ifq_status check_header(const uint8_t *data, size_t size, ifq_error *err, int *version_out)
{
    static const uint8_t MAGIC[8] = {'I', 'F', 'Q', 'T', 'Y', 'O', 'L', 'O'};
    if (size == 0)
        return fail(err, IFQ_ERR_EMPTY, "empty file (0 bytes), not an .ifq model");
    if (memcmp(data, MAGIC, size < 8 ? size : 8) != 0)
        return fail(err, IFQ_ERR_FOREIGN, "not an .ifq model file (wrong magic bytes)");
    if (size < HEADER_BYTES + CRC_BYTES)
        return fail(err, IFQ_ERR_TRUNCATED, "truncated (%zu bytes, shorter than the header)", size);
    uint32_t version = u16_at(data + 8), payload = u32_at(data + 12);
    uint32_t flags = u16_at(data + 10);
    if (version > IFQ_FORMAT_VERSION)
        return fail(err, IFQ_ERR_VERSION, "format version %u is newer than this program reads (1, 2, 3); "
                    "update ifq-tinier-yolo", version);
    if (version < 1)
        return fail(err, IFQ_ERR_VERSION, "unknown format version %u (this program reads 1, 2, 3)", version);
    *version_out = (int)version;
    uint64_t expected = (uint64_t)HEADER_BYTES + payload + CRC_BYTES;
    if (size < expected)
        return fail(err, IFQ_ERR_TRUNCATED, "truncated (%zu bytes, the header announces %llu)", size,
                    (unsigned long long)expected);
    if (size > expected)
        return fail(err, IFQ_ERR_TRAILING, "%llu unexpected bytes after the end of the model",
                    (unsigned long long)(size - expected));
    if (crc32_ieee(data, HEADER_BYTES + (size_t)payload) != u32_at(data + HEADER_BYTES + payload))
        return fail(err, IFQ_ERR_CORRUPTED, "corrupted (CRC-32 mismatch)");
    if (flags & ~FLAG_SEPARATED)
        return fail(err, IFQ_ERR_INVALID, "unknown flags %#x", flags);
    return IFQ_OK;
}

/* The checks of IntegerModel.check and modelfile.from_bytes on each head: anchors, output scale, stride. */
static ifq_status check_head(const ifq_layer *L, ifq_error *err)
{
    for (int i = 0; i < 2 * L->n_anchors; i++)
        if (L->anchors[i] <= 0)
            return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: anchors must be positive", L->name);
    if (L->out_multiplier < (1 << 30))   /* as an i32 it is below 2^31 by construction */
        return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: out_multiplier %ld outside [2**30, 2**31)",
                    L->name, (long)L->out_multiplier);
    if (L->out_shift < MIN_OUT_SHIFT || L->out_shift > MAX_OUT_SHIFT)
        return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: out_shift %d outside [%d, %d]", L->name,
                    L->out_shift, MIN_OUT_SHIFT, MAX_OUT_SHIFT);
    for (int i = 0; i < 2 * L->n_anchors; i++)
        if (L->anchors[i] >= MAX_ANCHOR_CELLS << ANCHOR_FRAC_BITS)
            return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: anchors must be below %d grid cells", L->name,
                        MAX_ANCHOR_CELLS);
    if (L->net_stride > MAX_STRIDE)
        return fail(err, IFQ_ERR_INVALID, "invalid model: layer %s: the stride must be at most %d", L->name,
                    MAX_STRIDE);
    return IFQ_OK;
}

static ifq_status parse(const uint8_t *data, size_t size, ifq_model *m, ifq_error *err)
{
    int32_t *v1_anchors = NULL, v1_multiplier = 0, v1_shift = 0;   /* version 1: the head's, from the description */
    ifq_status st = check_header(data, size, err, &m->version);
    if (st != IFQ_OK)
        return st;
    reader r = {data, HEADER_BYTES, size - CRC_BYTES, err};
    if (m->version == 1) {   /* size, layers, anchors, fraction bits, the head's scale, then anchors */
        const uint8_t *d = take(&r, DESCRIPTION_V1_BYTES, "description", NULL);
        if (!d)
            return IFQ_ERR_INVALID;
        m->input_size = (int)u16_at(d);
        m->n_layers = (int)u16_at(d + 2);
        m->n_anchors = (int)u16_at(d + 4);
        int frac = (int)u16_at(d + 6);
        v1_multiplier = i32_at(d + 8);
        v1_shift = d[12];
        if (!(m->n_layers >= 2 && m->n_layers <= IFQ_MAX_LAYERS && m->n_anchors >= 1 &&
              m->n_anchors <= MAX_ANCHORS_V1) || frac != ANCHOR_FRAC_BITS)
            return fail(err, IFQ_ERR_INVALID, "malformed description (%d layers, %d anchors, %d anchor fraction bits)",
                        m->n_layers, m->n_anchors, frac);
        if ((st = read_anchors(&r, m->n_anchors, &v1_anchors, NULL)) != IFQ_OK)
            return st;
    } else {                 /* size, layers, fraction bits, 0: the heads hold anchors and scale */
        const uint8_t *d = take(&r, DESCRIPTION_BYTES, "description", NULL);
        if (!d)
            return IFQ_ERR_INVALID;
        m->input_size = (int)u16_at(d);
        m->n_layers = (int)u16_at(d + 2);
        int frac = (int)u16_at(d + 4);
        if (!(m->n_layers >= 2 && m->n_layers <= IFQ_MAX_LAYERS) || frac != ANCHOR_FRAC_BITS || u16_at(d + 6))
            return fail(err, IFQ_ERR_INVALID, "malformed description (%d layers, %d anchor fraction bits)",
                        m->n_layers, frac);
    }
    st = read_table(&r, m);
    if (st == IFQ_OK)
        st = check_table(m, err);
    if (m->version == 1) {   /* the one head (the last row, if the table is valid) owns them */
        ifq_layer *head = &m->layers[m->n_layers - 1];
        if (st == IFQ_OK) {
            head->anchors = v1_anchors;
            head->out_multiplier = v1_multiplier;
            head->out_shift = v1_shift;
        } else {
            free(v1_anchors);
        }
    }
    if (st != IFQ_OK)
        return st;
    for (int i = 0; i < m->n_layers; i++)
        if ((st = read_section(&r, m, &m->layers[i])) != IFQ_OK)
            return st;
    if ((st = read_metadata(&r)) != IFQ_OK)
        return st;
    if (r.pos != r.end)
        return fail(err, IFQ_ERR_INVALID, "%zu bytes of payload after the metadata", r.end - r.pos);
    for (int h = 0; h < m->n_heads; h++)
        if ((st = check_head(&m->layers[m->heads[h]], err)) != IFQ_OK)
            return st;
    if (m->input_size > MAX_INPUT_SIZE)
        return fail(err, IFQ_ERR_INVALID, "invalid model: input size %d is over %d pixels", m->input_size,
                    MAX_INPUT_SIZE);
    return IFQ_OK;
}

ifq_status ifq_model_load(const uint8_t *data, size_t size, ifq_model **model, ifq_error *err)
{
    if (err)
        err->message[0] = 0;
    if (!model || (!data && size))
        return fail(err, IFQ_ERR_ARGUMENT, "ifq_model_load: null argument");
    *model = NULL;
    ifq_model *m = calloc(1, sizeof *m);
    if (!m)
        return fail(err, IFQ_ERR_NOMEM, "out of memory");
    ifq_status st = parse(data, size, m, err);
#ifdef IFQ_HAVE_AMX
    if (st == IFQ_OK && ifq_kernels_supported(IFQ_KERNELS_AMX) && !ifq_amx_prepare_model(m))
        st = fail(err, IFQ_ERR_NOMEM, "out of memory");
#endif
    if (st != IFQ_OK) {
        ifq_model_free(m);
        return st;
    }
    *model = m;
    return IFQ_OK;
}

void ifq_model_free(ifq_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < IFQ_MAX_LAYERS; i++) {
        ifq_layer *L = &m->layers[i];
        free(L->thresholds);
        free(L->negate);
        free(L->t_lanes);
        free(L->neg_lanes);
        free(L->w_pairs);
        free(L->w_quads);
        free(L->w_bits);
        free(L->w_head);
        free(L->bias);
        free(L->anchors);
        free(L->amx_tiles);
    }
    free(m);
}

int ifq_model_input_size(const ifq_model *m) { return m->input_size; }
int ifq_model_num_layers(const ifq_model *m) { return m->n_layers; }
int ifq_model_num_anchors(const ifq_model *m) { return m->n_anchors; }
int ifq_model_stride(const ifq_model *m) { return m->stride; }
