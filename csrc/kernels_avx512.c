/* kernels_avx512.c: x86-64 AVX-512 (F, BW, VL) with VPOPCNTDQ and VNNI (Ice Lake and later),
 * chosen at run time, bit-exact with kernels_portable.c: the binary layers count 512 bits per
 * instruction, the first layer and the head multiply four bytes per lane (vpdpbusd), the
 * thresholds take sixteen outputs per register. Compiled for these by a target pragma. */
#include "ifq_internal.h"

#ifdef IFQ_HAVE_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx512vnni,avx2,popcnt"))), \
                             apply_to = function)
#else
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx512vnni,avx2,popcnt")
#endif
#include <immintrin.h>
#include <stdlib.h>
#include <string.h>

/* The code bits of sixteen outputs: the accumulators, negated where neg is all ones, against
 * the three sorted thresholds (code = how many it exceeds); bit 0 of each code (odd counts) into
 * *bit0, bit 1 (counts of 2 or more) into *bit1, as kernels_portable.c. */
static inline void code_bits(__m512i acc, __m512i neg, __m512i t0, __m512i t1, __m512i t2, uint64_t *bit0,
                             uint64_t *bit1)
{
    const __m512i v = _mm512_sub_epi32(_mm512_xor_si512(acc, neg), neg);
    const __mmask16 m0 = _mm512_cmpgt_epi32_mask(v, t0), m1 = _mm512_cmpgt_epi32_mask(v, t1);
    const __mmask16 m2 = _mm512_cmpgt_epi32_mask(v, t2);
    *bit0 = _cvtmask16_u32(_kxor_mask16(_kxor_mask16(m0, m1), m2));
    *bit1 = _cvtmask16_u32(m1);
}

/* Four window bytes times four int8 weights per lane (u8 x s8, exact int32 sums), sixteen
 * outputs per register, up to 64 outputs a pass (one broadcast serves four registers, four
 * independent chains), read straight from the rows. */
static void first_dot(const uint8_t *const *rows, size_t at, int k, int row_len, const int16_t *w_pairs, const int8_t *w,
                      int out_pad, int32_t *acc)
{
    (void)w_pairs;
    for (int g = 0; g < out_pad; g += 64) {
        const int n = out_pad - g >= 64 ? 4 : (out_pad - g) / 16;
        __m512i sum[4] = {_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(),
                          _mm512_setzero_si512()};
        for (int ky = 0; ky < k; ky++)
            for (int j = 0; j < row_len; j += 4) {
                int32_t quad;
                memcpy(&quad, rows[ky] + at + j, sizeof quad);
                const __m512i q = _mm512_set1_epi32(quad);
                const int8_t *wj = w + ((size_t)ky * row_len + j) * out_pad + 4 * g;
                IFQ_UNROLL
                for (int i = 0; i < 4; i++)
                    if (i < n)
                        sum[i] = _mm512_dpbusd_epi32(sum[i], q, _mm512_loadu_si512(wj + 64 * i));
            }
        for (int i = 0; i < n; i++)
            _mm512_storeu_si512(acc + g + 16 * i, sum[i]);
    }
}

/* IFQ_FIRST_BLOCK interior positions of a first-layer row, dots and codes in one pass: one weight
 * load serves all positions, their sums are independent chains (a single position waits on
 * vpdpbusd's latency), and the sums go from registers straight to threshold masks and code bits
 * (as `codes` below) without a round trip through memory. */
#define IFQ_OWN_FIRST_CODES
static void first_codes(ifq_runner *r, const ifq_layer *L, size_t at, size_t step, uint64_t *px, int nw,
                        int32_t *sums)
{
    const int k = L->k, row_len = L->row_len, out_pad = L->out_pad, cp = L->codes_pad;
    memset(px, 0, (size_t)IFQ_FIRST_BLOCK * 2 * nw * sizeof *px);
    for (int g = 0; g < out_pad; g += 16) {
        __m512i sum[IFQ_FIRST_BLOCK];   /* unrolled: the sums stay in registers */
        IFQ_UNROLL
        for (int i = 0; i < IFQ_FIRST_BLOCK; i++)
            sum[i] = _mm512_setzero_si512();
        for (int ky = 0; ky < k; ky++) {
            const uint8_t *row = r->window[ky] + at;
            for (int j = 0; j < row_len; j += 4) {
                __m512i wv = _mm512_loadu_si512(L->w_quads + ((size_t)ky * row_len + j) * out_pad + 4 * g);
                IFQ_UNROLL
                for (int i = 0; i < IFQ_FIRST_BLOCK; i++) {
                    int32_t quad;
                    memcpy(&quad, row + i * step + j, sizeof quad);
                    sum[i] = _mm512_dpbusd_epi32(sum[i], _mm512_set1_epi32(quad), wv);
                }
            }
        }
        const __m512i n = _mm512_loadu_si512(L->neg_lanes + g), t0 = _mm512_loadu_si512(L->t_lanes + g);
        const __m512i t1 = _mm512_loadu_si512(L->t_lanes + cp + g), t2 = _mm512_loadu_si512(L->t_lanes + 2 * cp + g);
        const int word = g / IFQ_WORD_BITS, shift = g % IFQ_WORD_BITS;
        IFQ_UNROLL
        for (int i = 0; i < IFQ_FIRST_BLOCK; i++) {
            uint64_t b0, b1, *p = px + (size_t)i * 2 * nw;
            code_bits(sum[i], n, t0, t1, t2, &b0, &b1);
            p[word] |= b0 << shift;
            p[nw + word] |= b1 << shift;
        }
    }
    for (int i = 0; i < IFQ_FIRST_BLOCK; i++) {
        const uint64_t *p = px + (size_t)i * 2 * nw;
        int32_t s = 0;
        for (int w = 0; w < nw; w++)
            s += (int32_t)(_mm_popcnt_u64(p[w]) + 2 * _mm_popcnt_u64(p[nw + w]));
        sums[i] = s;
    }
}

/* 2 (plane-0 counts + 2 plane-1 counts) - code_sum of eight outputs, narrowed to int32 (it fits:
 * these kernels run layers with acc_bound < 2^31). */
static __m256i lane_acc(__m512i plane0, __m512i plane1, __m256i code_sum)
{
    __m256i p = _mm512_cvtepi64_epi32(_mm512_add_epi64(plane0, _mm512_slli_epi64(plane1, 1)));
    return _mm256_sub_epi32(_mm256_add_epi32(p, p), code_sum);
}

/* Eight outputs per register, one 64-bit lane each: the window word is broadcast, ANDed with the
 * eight outputs' weight words and counted by vpopcntq; no horizontal sums. Four (else two) groups
 * per pass share the broadcasts and leave with 512-bit stores. */
IFQ_HOT void bit_dot(const uint64_t *x0, const uint64_t *x1, const uint64_t *w, int words, int groups,
                    int32_t code_sum, int32_t *acc)
{
    const size_t group = (size_t)words * IFQ_LANES;
    const __m256i sum = _mm256_set1_epi32(code_sum);
    int g = 0;
    for (; g + 3 < groups; g += 4, w += 4 * group) {   /* four groups: 8 sums in registers */
        __m512i s[4], t[4];
        IFQ_UNROLL
        for (int j = 0; j < 4; j++)
            s[j] = t[j] = _mm512_setzero_si512();
        for (int i = 0; i < words; i++) {
            __m512i a = _mm512_set1_epi64((long long)x0[i]), b = _mm512_set1_epi64((long long)x1[i]);
            IFQ_UNROLL
            for (int j = 0; j < 4; j++) {
                __m512i wj = _mm512_loadu_si512(w + (size_t)j * group + (size_t)i * IFQ_LANES);
                s[j] = _mm512_add_epi64(s[j], _mm512_popcnt_epi64(_mm512_and_si512(a, wj)));
                t[j] = _mm512_add_epi64(t[j], _mm512_popcnt_epi64(_mm512_and_si512(b, wj)));
            }
        }
        _mm512_storeu_si512(acc + g * IFQ_LANES,
                            _mm512_inserti64x4(_mm512_castsi256_si512(lane_acc(s[0], t[0], sum)), lane_acc(s[1], t[1], sum), 1));
        _mm512_storeu_si512(acc + (g + 2) * IFQ_LANES,
                            _mm512_inserti64x4(_mm512_castsi256_si512(lane_acc(s[2], t[2], sum)), lane_acc(s[3], t[3], sum), 1));
    }
    for (; g + 1 < groups; g += 2, w += 2 * group) {
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
        __m512i t0 = _mm512_setzero_si512(), t1 = _mm512_setzero_si512();
        for (int i = 0; i < words; i++) {
            __m512i a = _mm512_set1_epi64((long long)x0[i]), b = _mm512_set1_epi64((long long)x1[i]);
            __m512i w0 = _mm512_loadu_si512(w + (size_t)i * IFQ_LANES);
            __m512i w1 = _mm512_loadu_si512(w + group + (size_t)i * IFQ_LANES);
            s0 = _mm512_add_epi64(s0, _mm512_popcnt_epi64(_mm512_and_si512(a, w0)));
            t0 = _mm512_add_epi64(t0, _mm512_popcnt_epi64(_mm512_and_si512(b, w0)));
            s1 = _mm512_add_epi64(s1, _mm512_popcnt_epi64(_mm512_and_si512(a, w1)));
            t1 = _mm512_add_epi64(t1, _mm512_popcnt_epi64(_mm512_and_si512(b, w1)));
        }
        __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(lane_acc(s0, t0, sum)), lane_acc(s1, t1, sum), 1);
        _mm512_storeu_si512(acc + g * IFQ_LANES, both);
    }
    if (g < groups) {
        __m512i s0 = _mm512_setzero_si512(), t0 = _mm512_setzero_si512();
        for (int i = 0; i < words; i++) {
            __m512i w0 = _mm512_loadu_si512(w + (size_t)i * IFQ_LANES);
            s0 = _mm512_add_epi64(s0, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_set1_epi64((long long)x0[i]), w0)));
            t0 = _mm512_add_epi64(t0, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_set1_epi64((long long)x1[i]), w0)));
        }
        _mm256_storeu_si256((__m256i *)(acc + g * IFQ_LANES), lane_acc(s0, t0, sum));
    }
}

/* Sixteen outputs per register, compares straight into mask bits (the code bits as in
 * kernels_portable.c); the code sum is counted once per 64 outputs from the two code words
 * (code = bit 0 + 2 bit 1; padding outputs have zero bits). */
IFQ_HOT int32_t codes(const int32_t *acc, const int32_t *t, const int32_t *neg, int n_out, int codes_pad,
                     uint64_t *px, int nw)
{
    int32_t sum = 0;
    for (int w = 0; w < nw; w++) {
        uint64_t bit0 = 0, bit1 = 0;
        const int base = w * IFQ_WORD_BITS, end = base + IFQ_WORD_BITS < n_out ? base + IFQ_WORD_BITS : n_out;
        for (int o = base; o < end; o += 16) {
            uint64_t b0, b1;
            code_bits(_mm512_loadu_si512(acc + o), _mm512_loadu_si512(neg + o), _mm512_loadu_si512(t + o),
                      _mm512_loadu_si512(t + codes_pad + o), _mm512_loadu_si512(t + 2 * codes_pad + o), &b0, &b1);
            bit0 |= b0 << (o - base);
            bit1 |= b1 << (o - base);
        }
        px[w] = bit0;
        px[nw + w] = bit1;
        sum += (int32_t)(_mm_popcnt_u64(bit0) + 2 * _mm_popcnt_u64(bit1));
    }
    return sum;
}

static void max_into(int32_t *best, const int32_t *acc, int n)
{
    for (int o = 0; o < n; o += 16)
        _mm512_storeu_si512(best + o, _mm512_max_epi32(_mm512_loadu_si512(acc + o), _mm512_loadu_si512(best + o)));
}

/* 64 codes per word pair: bytes of 1 where bit 0 is set plus bytes of 2 where bit 1 is. */
static void unpack_codes(const uint64_t *px, int nw, uint8_t *out)
{
    const __m512i one = _mm512_set1_epi8(1), two = _mm512_set1_epi8(2);
    for (int w = 0; w < nw; w++)
        _mm512_storeu_si512(out + w * IFQ_WORD_BITS,
                            _mm512_add_epi8(_mm512_maskz_mov_epi8(px[w], one), _mm512_maskz_mov_epi8(px[nw + w], two)));
}

/* Codes (u8) times int8 weights, four per lane (vpdpbusd), one horizontal sum per output. */
static void head_dot(const uint8_t *codes_in, const int8_t *w, int in_pad, int n_out, int32_t *acc)
{
    for (int o = 0; o < n_out; o++, w += in_pad) {
        __m512i sum = _mm512_setzero_si512();
        for (int c = 0; c < in_pad; c += 64)
            sum = _mm512_dpbusd_epi32(sum, _mm512_loadu_si512(codes_in + c), _mm512_loadu_si512(w + c));
        acc[o] = _mm512_reduce_add_epi32(sum);
    }
}

#define IFQ_KERNEL_SET ifq_kernels_avx512
#define IFQ_KERNEL_ID IFQ_KERNELS_AVX512
#include "ifq_rows.h"

#ifdef IFQ_HAVE_AMX
/* The AMX set: these kernels, but the binary layers and the heads as int8 tile products. A
 * window row of codes is unpacked to one byte per code, with its zero padding, and TDPBUSD
 * multiplies 16 conv positions x 64 code bytes by 64 x 16 weights (sixteen thousand multiply-adds
 * an instruction; on a binary layer the +-1 weights and the 0..3 codes give the same integer as
 * the popcount form, 2 (x0 & w + 2 x1 & w) - code sum). The accumulators then meet the
 * thresholds as above, or take a head's bias. */
#define IFQ_AMX_TARGET __attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vpopcntdq,avx512vnni,avx2,popcnt")))
#define IFQ_TILE_ROWS 16     /* conv positions (A rows) and outputs (C columns) of a tile */
#define IFQ_TILE_BYTES 64    /* code bytes of a tile row (K), 16 weight quads of a B tile */
#define IFQ_TILE_SIZE (IFQ_TILE_ROWS * IFQ_TILE_BYTES)
#define IFQ_AMX_BLOCK (2 * IFQ_TILE_ROWS)   /* conv positions of a block: two A tiles */

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amx_config;

/* Tiles 0-3: accumulators (2 position tiles x 2 output tiles), 4-5: codes, 6-7: weights. */
static const amx_config AMX_CONFIG = {
    1, 0, {0},
    {64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0},
    {16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0},
};

/* Does layer L run on tiles (a binary or fixed layer, or a 1x1 head, with int32 accumulators)? The
 * first layer stays with first_codes, faster here: its three channels fill a fifth of a tile row. */
static int amx_layer(const ifq_layer *L)
{
    const int head = L->kind == IFQ_KIND_HEAD && L->k == 1 && L->stride == 1 && !L->pool;
    return (L->kind == IFQ_KIND_HIDDEN || L->kind == IFQ_KIND_FIXED || head) && L->acc_bound < IFQ_INT32_LIMIT;
}

/* Accumulator columns of a position: the outputs rounded up to whole tiles (codes_pad for a
 * binary layer). */
static int amx_cols(const ifq_layer *L)
{
    return (L->out_ch + IFQ_TILE_ROWS - 1) / IFQ_TILE_ROWS * IFQ_TILE_ROWS;
}

/* The tile geometry of a layer: K chunks of a window row (k codes of in_ch bytes) and the bytes
 * of one unpacked window row, for conv positions up to `convs` rounded up to a block. */
static int amx_chunks(const ifq_layer *L)
{
    return (L->k * L->in_ch + IFQ_TILE_BYTES - 1) / IFQ_TILE_BYTES;
}

static size_t amx_row_bytes(const ifq_layer *L, int convs, int in_words)
{
    const size_t blocks = ((size_t)convs + IFQ_AMX_BLOCK - 1) / IFQ_AMX_BLOCK;
    return (blocks * IFQ_AMX_BLOCK * L->stride + 2 * (size_t)L->k) * L->in_ch +
           (size_t)IFQ_TILE_BYTES * (in_words + 1);
}

/* +-1: bit i of output o's weight bits (w_bits' layout, ifq_internal.h). */
static int8_t binary_weight(const ifq_layer *L, int o, size_t i)
{
    const uint64_t word = L->w_bits[((size_t)(o / IFQ_LANES) * L->w_words + i / IFQ_WORD_BITS) * IFQ_LANES + o % IFQ_LANES];
    return (word >> (i % IFQ_WORD_BITS)) & 1 ? 1 : -1;
}

/* The weight of output o on tap (ky, kx), channel c, from the layer's own layout. */
static int8_t tap_weight(const ifq_layer *L, int o, int ky, int kx, int c)
{
    if (L->kind == IFQ_KIND_HEAD)
        return L->w_head[(size_t)o * L->in_pad + c];
    if (L->kind == IFQ_KIND_FIXED) {   /* first_dot's: window rows of row_len bytes (kx, c), in quads */
        const size_t at = (size_t)ky * L->row_len + (size_t)kx * L->in_ch + c;
        return L->w_quads[((at / 4) * L->out_pad + o) * 4 + at % 4];
    }
    return binary_weight(L, o, ((size_t)ky * L->k + kx) * L->in_ch + c);
}

/* Weights as B tiles, [output tile][ky][chunk]: row q, column 4 o + b holds the weight of output
 * 16 t + o on window-row byte 64 chunk + 4 q + b (kx = byte / in_ch, channel = byte % in_ch): a
 * binary layer's +-1, a fixed layer's or a head's int8; 0 past the window row and for padding outputs. */
static void amx_weights(const ifq_layer *L, int8_t *tiles)
{
    const int k = L->k, C = L->in_ch, nch = amx_chunks(L);
    for (int t = 0; t < amx_cols(L) / IFQ_TILE_ROWS; t++)
        for (int ky = 0; ky < k; ky++)
            for (int ch = 0; ch < nch; ch++, tiles += IFQ_TILE_SIZE)
                for (int q = 0; q < IFQ_TILE_ROWS; q++)
                    for (int o = 0; o < IFQ_TILE_ROWS; o++)
                        for (int b = 0; b < 4; b++) {
                            const int j = ch * IFQ_TILE_BYTES + 4 * q + b, kx = j / C, c = j % C;
                            const int out = t * IFQ_TILE_ROWS + o;
                            tiles[q * IFQ_TILE_BYTES + 4 * o + b] =
                                kx < k && out < L->out_ch ? tap_weight(L, out, ky, kx, c) : 0;
                        }
}

int ifq_amx_prepare_model(ifq_model *m)
{
    for (int i = 0; i < m->n_layers; i++) {
        ifq_layer *L = &m->layers[i];
        if (!amx_layer(L))
            continue;
        const size_t n = (size_t)(amx_cols(L) / IFQ_TILE_ROWS) * L->k * amx_chunks(L) * IFQ_TILE_SIZE;
        if (!(L->amx_tiles = calloc(n, 1)))
            return 0;
        amx_weights(L, L->amx_tiles);
    }
    return 1;
}

/* The thresholds of a layer of at most 64 outputs (one code word) in registers, for a row. */
typedef struct {
    __m512i neg[4], t0[4], t1[4], t2[4];
    int groups;
} word_thresholds;

static void load_word_thresholds(const ifq_layer *L, word_thresholds *w)
{
    w->groups = (L->out_ch + 15) / 16;
    for (int g = 0; g < w->groups; g++) {
        w->neg[g] = _mm512_loadu_si512(L->neg_lanes + 16 * g);
        w->t0[g] = _mm512_loadu_si512(L->t_lanes + 16 * g);
        w->t1[g] = _mm512_loadu_si512(L->t_lanes + L->codes_pad + 16 * g);
        w->t2[g] = _mm512_loadu_si512(L->t_lanes + 2 * L->codes_pad + 16 * g);
    }
}

/* codes() of a one-word layer: the same bits, no threshold loads per position. */
static inline int32_t word_codes(const int32_t *acc, const word_thresholds *w, uint64_t *px)
{
    uint64_t bit0 = 0, bit1 = 0;
    IFQ_UNROLL
    for (int g = 0; g < 4; g++) {
        if (g >= w->groups)
            break;
        uint64_t b0, b1;
        code_bits(_mm512_loadu_si512(acc + 16 * g), w->neg[g], w->t0[g], w->t1[g], w->t2[g], &b0, &b1);
        bit0 |= b0 << (16 * g);
        bit1 |= b1 << (16 * g);
    }
    px[0] = bit0;
    px[1] = bit1;
    return (int32_t)(_mm_popcnt_u64(bit0) + 2 * _mm_popcnt_u64(bit1));
}

/* A runner's AMX scratch: the unpacked window rows and the accumulators of the largest layer. */
static int amx_prepare(ifq_runner *r)
{
    size_t rows = 1, acc = 1;
    for (int i = 0; i < r->m->n_layers; i++) {
        const ifq_layer *L = &r->m->layers[i];
        if (!L->amx_tiles)
            continue;
        const ifq_stage *in = &r->st[r->in_stage[i]];
        const int w = L->kind == IFQ_KIND_HEAD ? in->w : r->st[r->out_stage[i]].w;   /* a head keeps the map's size */
        const int positions = L->pool ? 2 : 1, span = L->k + (L->pool ? L->stride : 0);
        const size_t need_rows = span * amx_row_bytes(L, w * positions, in->words);
        const size_t need_acc = (size_t)positions * IFQ_AMX_BLOCK * amx_cols(L);
        rows = need_rows > rows ? need_rows : rows;
        acc = need_acc > acc ? need_acc : acc;
    }
    if (!(r->amx_rows = ifq_block(r, rows, 1)) || !(r->amx_acc = ifq_block(r, acc, sizeof *r->amx_acc)))
        return 0;
    r->feature_bytes += rows + acc * sizeof *r->amx_acc;   /* feature data in another form: counted */
    return 1;
}

/* Window row `src` (bit-planes, `words` words per plane per pixel) as one byte per code, pixel x
 * at dst + (x + pad) * C; zeros to the left (the padding) and after the last pixel. With 16 or 32
 * channels, 64 / C pixels' words are narrowed to C bits and leave in one store. */
IFQ_AMX_TARGET static void amx_unpack(const uint8_t *src, int w, int words, int C, int pad, size_t bytes, uint8_t *dst)
{
    const uint64_t *px = (const uint64_t *)src;
    memset(dst, 0, (size_t)pad * C);
    int x = 0;
    if (words == 1 && (C == 16 || C == 32)) {
        const __m512i one = _mm512_set1_epi8(1), two = _mm512_set1_epi8(2);
        const int per = IFQ_WORD_BITS / C;
        /* the narrowed words alternate plane 0, plane 1: gather each plane's into one half */
        const __m128i split = C == 16 ? _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15)
                                      : _mm_setr_epi8(0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15);
        for (; x + per <= w; x += per) {
            const __m128i narrow = C == 16 ? _mm512_cvtepi64_epi16(_mm512_loadu_si512(px + 2 * x))
                                           : _mm256_cvtepi64_epi32(_mm256_loadu_si256((const __m256i *)(px + 2 * x)));
            const __m128i planes = _mm_shuffle_epi8(narrow, split);
            _mm512_storeu_si512(dst + (size_t)(x + pad) * C,
                                _mm512_add_epi8(_mm512_maskz_mov_epi8((uint64_t)_mm_cvtsi128_si64(planes), one),
                                                _mm512_maskz_mov_epi8((uint64_t)_mm_extract_epi64(planes, 1), two)));
        }
    }
    /* the rest a pixel at a time, 64 bytes a word: the zeros past C are overwritten next */
    for (px += 2 * (size_t)words * x; x < w; x++, px += 2 * words)
        unpack_codes(px, words, dst + (size_t)(x + pad) * C);
    const size_t end = (size_t)(w + pad) * C;
    memset(dst + end, 0, bytes - end);
}

/* Accumulators of conv positions x0 .. x0 + 31 of conv row `top` into acc (position-major,
 * codes_pad a position): two position tiles by two output tiles at a time over the window. */
IFQ_AMX_TARGET static void amx_block(const ifq_layer *L, const int8_t *tiles, const uint8_t *rows, size_t row_bytes,
                                     int top, int x0, int convs, int32_t *acc)
{
    const int k = L->k, nch = amx_chunks(L), cols = amx_cols(L), n_out = cols / IFQ_TILE_ROWS;
    const int two_x = x0 + IFQ_TILE_ROWS < convs;
    const size_t step = (size_t)L->stride * L->in_ch, out_tile = (size_t)k * nch * IFQ_TILE_SIZE;
    const size_t acc_stride = (size_t)cols * sizeof *acc;
    for (int t = 0; t < n_out; t += 2) {
        const int two_o = t + 1 < n_out;
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        for (int ky = 0; ky < k; ky++) {
            const uint8_t *a = rows + (size_t)(top + ky) * row_bytes + (size_t)x0 * step;
            const int8_t *b = tiles + (size_t)t * out_tile + (size_t)ky * nch * IFQ_TILE_SIZE;
            for (int ch = 0; ch < nch; ch++, a += IFQ_TILE_BYTES, b += IFQ_TILE_SIZE) {
                _tile_loadd(4, a, step);
                _tile_loadd(6, b, IFQ_TILE_BYTES);
                _tile_dpbusd(0, 4, 6);
                if (two_x) {
                    _tile_loadd(5, a + IFQ_TILE_ROWS * step, step);
                    _tile_dpbusd(1, 5, 6);
                }
                if (two_o) {
                    _tile_loadd(7, b + out_tile, IFQ_TILE_BYTES);
                    _tile_dpbusd(2, 4, 7);
                    if (two_x)
                        _tile_dpbusd(3, 5, 7);
                }
            }
        }
        int32_t *c = acc + (size_t)t * IFQ_TILE_ROWS;
        _tile_stored(0, c, acc_stride);
        if (two_x)
            _tile_stored(1, c + (size_t)IFQ_TILE_ROWS * cols, acc_stride);
        if (two_o) {
            _tile_stored(2, c + IFQ_TILE_ROWS, acc_stride);
            if (two_x)
                _tile_stored(3, c + (size_t)IFQ_TILE_ROWS * cols + IFQ_TILE_ROWS, acc_stride);
        }
    }
}

/* One output row of a layer: binary layers on tiles, blank positions copied as in conv_row (a
 * block of copies only is skipped, a row of them not even unpacked); the others by the AVX-512
 * row code. */
IFQ_AMX_TARGET static void amx_conv_row(ifq_runner *r, const ifq_layer *L, const ifq_stage *in, const ifq_stage *out,
                                        uint8_t *dst, int32_t *dst_sums)
{
    const int li = (int)(L - r->m->layers);
    if (!L->amx_tiles) {
        conv_row(r, L, in, out, dst, dst_sums);
        return;
    }
    const int positions = L->pool ? 2 : 1, span = L->k + (L->pool ? L->stride : 0), convs = out->w * positions;
    const int nw = out->words, cp = L->codes_pad;
    const size_t row_bytes = amx_row_bytes(L, convs, in->words);
    uint64_t *row = (uint64_t *)dst;
    const ifq_blank *b = r->blank_out;
    int unpacked = 0;   /* the window rows as bytes, once a block has positions to compute */
    word_thresholds wt = {.groups = 0};
    if (nw == 1)
        load_word_thresholds(L, &wt);
    for (int x0 = 0; x0 < convs; x0 += IFQ_AMX_BLOCK) {
        const int first = x0 / positions, end = (x0 + IFQ_AMX_BLOCK < convs ? x0 + IFQ_AMX_BLOCK : convs) / positions;
        const int copies = r->blank_ok[li] && ((b->left[0] <= first && end <= b->left[1]) ||
                                              (b->right[0] <= first && end <= b->right[1]));   /* all of them */
        if (!copies && !unpacked) {   /* a row of copies (letterbox bands) is not even unpacked */
            for (int j = 0; j < span; j++)
                amx_unpack(r->window[j], in->w, in->words, L->in_ch, L->k / 2, row_bytes,
                           r->amx_rows + (size_t)j * row_bytes);
            unpacked = 1;
        }
        for (int dy = 0; dy < positions && !copies; dy++)
            amx_block(L, L->amx_tiles, r->amx_rows, row_bytes, dy * L->stride, x0, convs,
                      r->amx_acc + (size_t)dy * IFQ_AMX_BLOCK * cp);
        for (int x = first; x < end; x++) {
            if (copy_blank(r, li, x, row + (size_t)x * 2 * nw, dst_sums + x, nw))
                continue;
            const int32_t *best = r->amx_acc + (size_t)(x - first) * positions * cp;
            if (L->pool) {   /* 2x2 max of the raw accumulators: (dy, dx) = (0, 0), (0, 1), (1, 0), (1, 1) */
                const int32_t *low = best + (size_t)IFQ_AMX_BLOCK * cp;
                memcpy(r->best32, best, (size_t)cp * sizeof *best);
                max_into(r->best32, best + cp, cp);
                max_into(r->best32, low, cp);
                max_into(r->best32, low + cp, cp);
                best = r->best32;
            }
            uint64_t *px = row + (size_t)x * 2 * nw;
            dst_sums[x] = nw == 1 ? word_codes(best, &wt, px)
                                  : codes(best, L->t_lanes, L->neg_lanes, L->out_ch, cp, px, nw);
            keep_blank(r, li, x, px, dst_sums[x], nw);
        }
    }
}

/* Head row y on tiles (a 1x1 layer: one window row, the input row itself), plus the bias,
 * channel-major into head (O, in->h, in->w); else the AVX-512 head_row. */
IFQ_AMX_TARGET static void amx_head_row(ifq_runner *r, const ifq_layer *L, const ifq_stage *in, const uint8_t *src,
                                        int y, int32_t *head)
{
    const int cols = amx_cols(L);
    if (!L->amx_tiles) {
        head_row(r, L, in, src, y, head);
        return;
    }
    const size_t row_bytes = amx_row_bytes(L, in->w, in->words), plane = (size_t)in->h * in->w;
    amx_unpack(src, in->w, in->words, L->in_ch, 0, row_bytes, r->amx_rows);
    for (int x0 = 0; x0 < in->w; x0 += IFQ_AMX_BLOCK) {
        amx_block(L, L->amx_tiles, r->amx_rows, row_bytes, 0, x0, in->w, r->amx_acc);
        const int end = x0 + IFQ_AMX_BLOCK < in->w ? x0 + IFQ_AMX_BLOCK : in->w;
        for (int x = x0; x < end; x++)
            for (int o = 0; o < L->out_ch; o++)
                head[o * plane + (size_t)y * in->w + x] = r->amx_acc[(size_t)(x - x0) * cols + o] + L->bias[o];
    }
}

/* The tile configuration, loaded once a run (a load costs as much as a few tile products). */
IFQ_AMX_TARGET static void amx_begin(void)
{
    _tile_loadconfig(&AMX_CONFIG);
}

IFQ_AMX_TARGET static void amx_end(void)
{
    _tile_release();
}

const ifq_kernel_set ifq_kernels_amx = {IFQ_KERNELS_AMX, amx_conv_row, amx_head_row, amx_prepare, amx_begin, amx_end};
#endif

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
