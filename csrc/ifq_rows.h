/* ifq_rows.h: the layers row by row, compiled once into each kernels_*.c file (included after
 * the file defines its kernels), so that the row loops call the kernels directly, inlined, with
 * the file's instruction set. The including file defines, as static functions:
 *     first_dot, bit_dot, codes     (see their use below; bit-exact with kernels_portable.c)
 *     max_into(best, acc, n)        best[o] = max(best[o], acc[o]) for o < n (a multiple of 16)
 *     unpack_codes(px, nw, codes)   a pixel's two bit-planes (nw words each) -> one byte per code
 *                                   (64 * nw bytes; codes past the channels are 0)
 *     head_dot                      acc[o] = sum_c codes[c] * w[o][c]
 * and the macro IFQ_KERNEL_SET (name) and IFQ_KERNEL_ID (ifq_kernels value). Optionally, with
 * IFQ_OWN_FIRST_DOTS defined, first_dots (IFQ_FIRST_BLOCK positions of a first-layer row at once);
 * else the one below, first_dot position by position; or, with IFQ_OWN_FIRST_CODES, first_codes
 * (those positions' dots and codes in one pass).
 *
 * Binary layers: codes are two bit-planes; the window at one position is gathered into two
 * bit-strings x0, x1 (values ordered ky, kx, channel) and, with +-1 weights as bits w,
 *     acc = sum w * code = 2 (popcount(x0 & w) + 2 popcount(x1 & w)) - (window's code sum)
 * where the code sum, shared by all outputs, comes from the per-pixel sums of the stage.
 */
#include <string.h>

#include "ifq_internal.h"

/* First layer: the k rows of the window at conv position (row `top` of the window, column xc),
 * as row pointers plus a byte offset `*at`: k * C bytes (kx, c) each, and readable padding up to
 * row_len. Inside the map they are the line buffers themselves (the padding bytes meet zero
 * weights); at the edges r->patch, a copy with zeros outside the map. */
static const uint8_t *const *window_rows_first(ifq_runner *r, const ifq_layer *L, int top, int xc, int w_in,
                                                size_t *at)
{
    const int k = L->k, C = L->in_ch, x0 = xc * L->stride - k / 2;
    if (x0 >= 0 && x0 + k <= w_in) {
        *at = (size_t)x0 * C;
        return r->window + top;
    }
    *at = 0;
    for (int ky = 0; ky < k; ky++) {
        const uint8_t *row = r->window[top + ky];
        uint8_t *v = r->patch + (size_t)ky * L->row_len;
        memset(v, 0, (size_t)L->row_len);
        for (int kx = 0; kx < k; kx++)
            if (x0 + kx >= 0 && x0 + kx < w_in)
                memcpy(v + kx * C, row + (size_t)(x0 + kx) * C, (size_t)C);
        r->first_rows[ky] = v;
    }
    return r->first_rows;
}

#ifndef IFQ_OWN_FIRST_CODES
#ifndef IFQ_OWN_FIRST_DOTS
/* First layer, IFQ_FIRST_BLOCK interior positions of one row: position i's window starts at byte
 * at + i * step of the rows; accumulators of position i at acc + i * out_pad. */
static void first_dots(const uint8_t *const *rows, size_t at, size_t step, int k, int row_len, const int16_t *w_pairs,
                       const int8_t *w_quads, int out_pad, int32_t *acc)
{
    for (int i = 0; i < IFQ_FIRST_BLOCK; i++)
        first_dot(rows, at + i * step, k, row_len, w_pairs, w_quads, out_pad, acc + (size_t)i * out_pad);
}
#endif

/* First layer, IFQ_FIRST_BLOCK interior positions of one row (windows at byte at + i * step of
 * r->window's rows): their codes into the pixels px (2 * nw words each), code sums into sums. */
static void first_codes(ifq_runner *r, const ifq_layer *L, size_t at, size_t step, uint64_t *px, int nw,
                        int32_t *sums)
{
    first_dots(r->window, at, step, L->k, L->row_len, L->w_pairs, L->w_quads, L->out_pad, r->block32);
    for (int i = 0; i < IFQ_FIRST_BLOCK; i++)
        sums[i] = codes(r->block32 + (size_t)i * L->out_pad, L->t_lanes, L->neg_lanes, L->out_ch, L->codes_pad,
                        px + (size_t)i * 2 * nw, nw);
}
#endif

/* A bit-string written in order, a word at a time (no read-modify-write of memory). */
typedef struct {
    uint64_t *dst;
    uint64_t cur;   /* bits not yet stored */
    int fill;       /* how many, 0..63 */
} bit_writer;

/* Append the low n bits of v (1 <= n <= 64; v's higher bits zero). */
static void put_bits(bit_writer *b, uint64_t v, int n)
{
    b->cur |= v << b->fill;
    if (b->fill + n < IFQ_WORD_BITS) {
        b->fill += n;
        return;
    }
    int used = IFQ_WORD_BITS - b->fill;   /* bits of v that completed the word */
    *b->dst++ = b->cur;
    b->cur = used < IFQ_WORD_BITS ? v >> used : 0;
    b->fill += n - IFQ_WORD_BITS;
}

/* An interior 3x3 window of a 16- or 32-channel map (first column x0): four or two taps per
 * word, each at a fixed shift; returns the window's code sum. */
static int64_t gather_3x3(ifq_runner *r, int top, int x0, int C, uint64_t *d0, uint64_t *d1)
{
    uint64_t p0[9], p1[9];
    int64_t sum = 0;
    IFQ_UNROLL
    for (int ky = 0; ky < 3; ky++) {
        const uint64_t *row = (const uint64_t *)r->window[top + ky] + 2 * (size_t)x0;   /* pixel: 2 words */
        const int32_t *sums = r->window_sums[top + ky] + x0;
        IFQ_UNROLL
        for (int kx = 0; kx < 3; kx++) {
            p0[3 * ky + kx] = row[2 * kx];
            p1[3 * ky + kx] = row[2 * kx + 1];
        }
        sum += (int64_t)sums[0] + sums[1] + sums[2];
    }
    if (C == 16) {
        d0[0] = p0[0] | p0[1] << 16 | p0[2] << 32 | p0[3] << 48;
        d1[0] = p1[0] | p1[1] << 16 | p1[2] << 32 | p1[3] << 48;
        d0[1] = p0[4] | p0[5] << 16 | p0[6] << 32 | p0[7] << 48;
        d1[1] = p1[4] | p1[5] << 16 | p1[6] << 32 | p1[7] << 48;
        d0[2] = p0[8];
        d1[2] = p1[8];
        return sum;
    }
    IFQ_UNROLL
    for (int i = 0; i < 4; i++) {
        d0[i] = p0[2 * i] | p0[2 * i + 1] << 32;
        d1[i] = p1[2 * i] | p1[2 * i + 1] << 32;
    }
    d0[4] = p0[8];
    d1[4] = p1[8];
    return sum;
}

/* Hidden layer: the window at conv position (top, xc) into the bit-strings r->x0, r->x1
 * (w_words words each); returns the window's code sum. */
static int64_t gather_bits(ifq_runner *r, const ifq_layer *L, const ifq_stage *in, int top, int xc)
{
    const int k = L->k, C = L->in_ch, nw = in->words;
    int64_t sum = 0;
    if (C % IFQ_WORD_BITS == 0) {   /* whole words: copy, zeros for the padding */
        for (int ky = 0, at = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++, at += nw) {
                int xi = xc * L->stride + kx - k / 2;
                if (xi < 0 || xi >= in->w) {
                    for (int j = 0; j < nw; j++)
                        r->x0[at + j] = r->x1[at + j] = 0;
                    continue;
                }
                const uint64_t *px = (const uint64_t *)(r->window[top + ky]) + (size_t)xi * 2 * nw;
                sum += r->window_sums[top + ky][xi];
                for (int j = 0; j < nw; j++) {   /* a few words: a loop, not a library call */
                    r->x0[at + j] = px[j];
                    r->x1[at + j] = px[nw + j];
                }
            }
        return sum;
    }
    if (IFQ_WORD_BITS % C == 0) {   /* 1..32 channels, a divisor of 64: whole taps per word, no writer */
        const int per = IFQ_WORD_BITS / C, x0 = xc * L->stride - k / 2, interior = x0 >= 0 && x0 + k <= in->w;
        if (interior && k == 3 && (C == 16 || C == 32))   /* conv2, conv3: the nine taps, then fixed shifts */
            return gather_3x3(r, top, x0, C, r->x0, r->x1);
        uint64_t c0 = 0, c1 = 0;
        int t = 0, at = 0;
        for (int ky = 0; ky < k; ky++) {
            const uint64_t *row = (const uint64_t *)r->window[top + ky];   /* pixel x: words 2x, 2x + 1 */
            const int32_t *sums = r->window_sums[top + ky];
            for (int kx = 0, xi = x0; kx < k; kx++, xi++) {
                if (interior || (xi >= 0 && xi < in->w)) {   /* else zero padding: no bits */
                    c0 |= row[2 * xi] << (t * C);
                    c1 |= row[2 * xi + 1] << (t * C);
                    sum += sums[xi];
                }
                if (++t == per) {
                    r->x0[at] = c0;
                    r->x1[at++] = c1;
                    c0 = c1 = 0;
                    t = 0;
                }
            }
        }
        if (t) {
            r->x0[at] = c0;
            r->x1[at] = c1;
        }
        return sum;
    }
    bit_writer b0 = {r->x0, 0, 0}, b1 = {r->x1, 0, 0};
    if (nw == 1) {   /* fewer than 64 channels: taps collected in a word before the writer */
        const int x0 = xc * L->stride - k / 2, interior = x0 >= 0 && x0 + k <= in->w;
        uint64_t c0 = 0, c1 = 0;
        int cn = 0;
        for (int ky = 0; ky < k; ky++) {
            const uint64_t *row = (const uint64_t *)r->window[top + ky];   /* pixel x: words 2x, 2x + 1 */
            const int32_t *sums = r->window_sums[top + ky];
            for (int kx = 0, xi = x0; kx < k; kx++, xi++) {
                if (cn + C > IFQ_WORD_BITS) {
                    put_bits(&b0, c0, cn);
                    put_bits(&b1, c1, cn);
                    c0 = c1 = 0;
                    cn = 0;
                }
                if (interior || (xi >= 0 && xi < in->w)) {   /* else zero padding: no bits */
                    c0 |= row[2 * xi] << cn;
                    c1 |= row[2 * xi + 1] << cn;
                    sum += sums[xi];
                }
                cn += C;
            }
        }
        put_bits(&b0, c0, cn);
        put_bits(&b1, c1, cn);
    } else {
        for (int ky = 0; ky < k; ky++)
            for (int kx = 0; kx < k; kx++) {
                int xi = xc * L->stride + kx - k / 2, inside = xi >= 0 && xi < in->w;
                const uint64_t *px = (const uint64_t *)(r->window[top + ky]) + (size_t)(inside ? xi : 0) * 2 * nw;
                if (inside)
                    sum += r->window_sums[top + ky][xi];
                for (int j = 0; j < nw; j++) {
                    int n = C - j * IFQ_WORD_BITS < IFQ_WORD_BITS ? C - j * IFQ_WORD_BITS : IFQ_WORD_BITS;
                    put_bits(&b0, inside ? px[j] : 0, n);
                    put_bits(&b1, inside ? px[nw + j] : 0, n);
                }
            }
    }
    if (b0.fill) {   /* the last, partial word */
        *b0.dst = b0.cur;
        *b1.dst = b1.cur;
    }
    return sum;
}

/* Fixed layer: the window at conv position (top, xc) as one byte per code, a first layer's window
 * rows (k rows of row_len bytes (kx, c) in r->patch, zeros for the padding), for first_dot. A
 * tap's unpacked words run past its channels into the next tap's bytes, which that tap then
 * writes; past a row's k taps they meet zero weights, or the next row, written next. */
static const uint8_t *const *gather_codes(ifq_runner *r, const ifq_layer *L, const ifq_stage *in, int top, int xc)
{
    const int k = L->k, C = L->in_ch, nw = in->words;
    for (int ky = 0; ky < k; ky++) {
        uint8_t *row = r->patch + (size_t)ky * L->row_len;
        for (int kx = 0; kx < k; kx++) {
            const int xi = xc * L->stride + kx - k / 2;
            if (xi < 0 || xi >= in->w)
                memset(row + (size_t)kx * C, 0, (size_t)C);
            else
                unpack_codes((const uint64_t *)r->window[top + ky] + (size_t)xi * 2 * nw, nw, row + (size_t)kx * C);
        }
        r->first_rows[ky] = row;
    }
    return r->first_rows;
}

/* A first or fixed layer's window at conv position (top, xc) as byte rows for first_dot, from
 * byte *at of each: the canvas rows (first layer) or the gathered codes (fixed). */
static const uint8_t *const *byte_window(ifq_runner *r, const ifq_layer *L, const ifq_stage *in, int top, int xc,
                                         size_t *at)
{
    *at = 0;
    return L->kind == IFQ_KIND_FIRST ? window_rows_first(r, L, top, xc, in->w, at) : gather_codes(r, L, in, top, xc);
}

/* acc[o] of a layer whose accumulators fit int32 (every real one), by the kernel set. */
static void conv_acc32(ifq_runner *r, const ifq_layer *L, const ifq_stage *in, int top, int xc, int32_t *acc)
{
    if (L->kind != IFQ_KIND_HIDDEN) {   /* first, fixed: bytes times int8 weights */
        size_t at;
        const uint8_t *const *rows = byte_window(r, L, in, top, xc, &at);
        first_dot(rows, at, L->k, L->row_len, L->w_pairs, L->w_quads, L->out_pad, acc);
        return;
    }
    int32_t sum = (int32_t)gather_bits(r, L, in, top, xc);
    bit_dot(r->x0, r->x1, L->w_bits, L->w_words, L->groups, sum, acc);
}

static int popcount_slow(uint64_t x)
{
    int n = 0;
    for (; x; x &= x - 1)
        n++;
    return n;
}

/* acc[o] in int64 for layers too wide for int32 (huge kernels): plain C, never fast. */
static void conv_acc64(ifq_runner *r, const ifq_layer *L, const ifq_stage *in, int top, int xc, int64_t *acc)
{
    if (L->kind != IFQ_KIND_HIDDEN) {
        size_t at;
        const uint8_t *const *rows = byte_window(r, L, in, top, xc, &at);
        for (int o = 0; o < L->out_ch; o++) {
            int64_t a = 0;
            for (int ky = 0; ky < L->k; ky++)
                for (int j = 0; j < L->row_len; j++) {
                    size_t v = (size_t)ky * L->row_len + j;
                    a += (int64_t)rows[ky][at + j] * L->w_pairs[((v / 2) * L->out_pad + o) * 2 + v % 2];
                }
            acc[o] = a;
        }
        return;
    }
    int64_t sum = gather_bits(r, L, in, top, xc);
    for (int o = 0; o < L->out_ch; o++) {
        const uint64_t *w = L->w_bits + (size_t)(o / IFQ_LANES) * L->w_words * IFQ_LANES + o % IFQ_LANES;
        int64_t p = 0;
        for (int i = 0; i < L->w_words; i++)
            p += popcount_slow(r->x0[i] & w[(size_t)i * IFQ_LANES]) + 2 * popcount_slow(r->x1[i] & w[(size_t)i * IFQ_LANES]);
        acc[o] = 2 * p - sum;
    }
}

/* Codes of int64 accumulators (the wide path); returns the code sum. */
static int32_t codes64(const ifq_layer *L, const int64_t *acc, uint64_t *px, int nw)
{
    int32_t sum = 0;
    memset(px, 0, 2 * (size_t)nw * sizeof *px);
    for (int o = 0; o < L->out_ch; o++) {
        int64_t v = L->negate[o] ? -acc[o] : acc[o];
        const int32_t *t = L->thresholds + o * IFQ_N_THRESHOLDS;
        unsigned code = (unsigned)(v > t[0]) + (unsigned)(v > t[1]) + (unsigned)(v > t[2]);
        px[o / IFQ_WORD_BITS] |= (uint64_t)(code & 1u) << (o % IFQ_WORD_BITS);
        px[nw + o / IFQ_WORD_BITS] |= (uint64_t)(code >> 1) << (o % IFQ_WORD_BITS);
        sum += (int32_t)code;
    }
    return sum;
}

/* Do positions [x0, x1) meet either blank interval of b? */
static int meets_blank(const ifq_blank *b, int x0, int x1)
{
    return (x0 < b->left[1] && b->left[0] < x1) || (x0 < b->right[1] && b->right[0] < x1);
}

static int is_blank(const ifq_runner *r, int x)
{
    return meets_blank(r->blank_out, x, x + 1);
}

/* Blank positions (r->blank_out, see ifq_run.c) all have the same output, the layer's blank pixel:
 * kept from the first one computed, then copied. Returns 1 if position x was copied. */
static int copy_blank(ifq_runner *r, int li, int x, uint64_t *px, int32_t *sum, int nw)
{
    if (!r->blank_ok[li] || !is_blank(r, x))
        return 0;
    memcpy(px, r->blank[li], 2 * (size_t)nw * sizeof *px);
    *sum = r->blank_sum[li];
    return 1;
}

static void keep_blank(ifq_runner *r, int li, int x, const uint64_t *px, int32_t sum, int nw)
{
    if (r->blank_ok[li] || !is_blank(r, x))
        return;
    memcpy(r->blank[li], px, 2 * (size_t)nw * sizeof *px);
    r->blank_sum[li] = sum;
    r->blank_ok[li] = 1;
}

/* One output row of a first or hidden layer into its ring slot: conv, [2x2 max-pool of the raw
 * accumulators, before the sign], codes; blank positions copied. */
static void conv_row(ifq_runner *r, const ifq_layer *L, const ifq_stage *in, const ifq_stage *out, uint8_t *dst,
                     int32_t *dst_sums)
{
    const int positions = L->pool ? 2 : 1, nw = out->words, wide = L->acc_bound >= IFQ_INT32_LIMIT;
    const int li = (int)(L - r->m->layers);
    uint64_t *const row = (uint64_t *)dst;
    int x = 0;
    if (L->kind == IFQ_KIND_FIRST && !L->pool && !wide) {   /* interior windows, a block at a time */
        const int pad = L->k / 2, s = L->stride;
        const int lo = (pad + s - 1) / s, hi = in->w - L->k + pad >= 0 ? (in->w - L->k + pad) / s : -1;   /* interior x */
        for (; x < out->w; x++) {
            if (x >= lo && x <= hi && hi - lo + 1 >= IFQ_FIRST_BLOCK) {
                /* a block of interior positions; the last one ends at hi, overlapping the one
                 * before (its positions are computed again, to the same codes) */
                if (x + IFQ_FIRST_BLOCK - 1 > hi)
                    x = hi - IFQ_FIRST_BLOCK + 1;
                const int edge = meets_blank(r->blank_out, x, x + IFQ_FIRST_BLOCK);   /* else no position is blank */
                int blank = 0;
                for (int i = 0; i < IFQ_FIRST_BLOCK && edge; i++)
                    blank += copy_blank(r, li, x + i, row + (size_t)(x + i) * 2 * nw, dst_sums + x + i, nw);
                if (blank < IFQ_FIRST_BLOCK) {   /* the whole block: cheaper than position by position */
                    first_codes(r, L, (size_t)(x * s - pad) * L->in_ch, (size_t)s * L->in_ch,
                                row + (size_t)x * 2 * nw, nw, dst_sums + x);
                    for (int i = 0; i < IFQ_FIRST_BLOCK && edge; i++)
                        keep_blank(r, li, x + i, row + (size_t)(x + i) * 2 * nw, dst_sums[x + i], nw);
                }
                x += IFQ_FIRST_BLOCK - 1;
                continue;
            }
            conv_acc32(r, L, in, 0, x, r->best32);
            dst_sums[x] = codes(r->best32, L->t_lanes, L->neg_lanes, L->out_ch, L->codes_pad,
                                row + (size_t)x * 2 * nw, nw);
        }
        return;
    }
    for (; x < out->w; x++) {
        uint64_t *px = row + (size_t)x * 2 * nw;
        if (copy_blank(r, li, x, px, dst_sums + x, nw))
            continue;
        for (int dy = 0; dy < positions; dy++)
            for (int dx = 0; dx < positions; dx++) {
                int top = dy * L->stride, xc = x * positions + dx, first = !dy && !dx;
                if (wide) {
                    conv_acc64(r, L, in, top, xc, first ? r->best64 : r->acc64);
                    for (int o = 0; o < L->out_ch && !first; o++)
                        r->best64[o] = r->acc64[o] > r->best64[o] ? r->acc64[o] : r->best64[o];
                } else {
                    conv_acc32(r, L, in, top, xc, first ? r->best32 : r->acc32);
                    if (!first)
                        max_into(r->best32, r->acc32, L->codes_pad);
                }
            }
        dst_sums[x] = wide ? codes64(L, r->best64, px, nw)
                           : codes(r->best32, L->t_lanes, L->neg_lanes, L->out_ch, L->codes_pad, px, nw);
        keep_blank(r, li, x, px, dst_sums[x], nw);
    }
}


/* Head row y: int8 weights on the codes of its input row, plus the int32 bias, channel-major
 * into head (O, in->h, in->w). */
static void head_row(ifq_runner *r, const ifq_layer *L, const ifq_stage *in, const uint8_t *src, int y,
                     int32_t *head)
{
    const uint64_t *row = (const uint64_t *)src;
    const size_t plane = (size_t)in->h * in->w;
    for (int x = 0; x < in->w; x++) {
        unpack_codes(row + (size_t)x * 2 * in->words, in->words, r->codes);
        head_dot(r->codes, L->w_head, L->in_pad, L->out_ch, r->acc32);
        for (int o = 0; o < L->out_ch; o++)
            head[o * plane + (size_t)y * in->w + x] = r->acc32[o] + L->bias[o];
    }
}

const ifq_kernel_set IFQ_KERNEL_SET = {IFQ_KERNEL_ID, conv_row, head_row, NULL, NULL, NULL};
