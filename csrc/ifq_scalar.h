/* ifq_scalar.h: the kernels in plain C99 (static functions, see ifq_rows.h for the contracts):
 * the portable kernel set, and the fallback of a vector set for the kernels it does not
 * rewrite (define IFQ_SCALAR_OWN_BIT_DOT before including to supply your own bit_dot). */
#include "ifq_internal.h"

/* acc[o] = sum over window rows ky and bytes j of rows[ky][j] * weight, for o < out_pad. */
static void first_dot(const uint8_t *const *rows, size_t at, int k, int row_len, const int16_t *w, const int8_t *w_quads,
                      int out_pad, int32_t *acc)
{
    (void)w_quads;
    for (int o = 0; o < out_pad; o++)
        acc[o] = 0;
    for (int ky = 0; ky < k; ky++)
        for (int j = 0; j < row_len; j += 2) {
            const int32_t a = rows[ky][at + j], b = rows[ky][at + j + 1];
            const int16_t *wj = w + ((size_t)ky * row_len + j) * out_pad;
            for (int o = 0; o < out_pad; o++)
                acc[o] += a * wj[2 * o] + b * wj[2 * o + 1];
        }
}

#ifndef IFQ_SCALAR_OWN_BIT_DOT
/* Bits set in x, by the SWAR method: a few inlined operations, no table, no library call
 * (without a -mpopcnt build, __builtin_popcountll is a call). */
static int popcount64(uint64_t x)
{
    x = x - ((x >> 1) & 0x5555555555555555u);
    x = (x & 0x3333333333333333u) + ((x >> 2) & 0x3333333333333333u);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Fu;
    return (int)((x * 0x0101010101010101u) >> 56);
}

/* acc[o] = 2 (popcount(x0 & w_o) + 2 popcount(x1 & w_o)) - code_sum, outputs in lanes of 8. */
IFQ_HOT void bit_dot(const uint64_t *x0, const uint64_t *x1, const uint64_t *w, int words, int groups,
                    int32_t code_sum, int32_t *acc)
{
    for (int g = 0; g < groups; g++, w += (size_t)words * IFQ_LANES)
        for (int lane = 0; lane < IFQ_LANES; lane++) {
            int32_t s = 0;
            for (int i = 0; i < words; i++) {
                uint64_t wi = w[(size_t)i * IFQ_LANES + lane];
                s += popcount64(x0[i] & wi) + 2 * popcount64(x1[i] & wi);
            }
            acc[g * IFQ_LANES + lane] = 2 * s - code_sum;
        }
}
#endif

/* Codes into two bit-planes; returns their sum. With non-decreasing thresholds the tests nest
 * (m2 implies m1 implies m0), so the code m0 + m1 + m2 has bit 0 = m0 ^ m1 ^ m2, bit 1 = m1. */
IFQ_HOT int32_t codes(const int32_t *acc, const int32_t *t, const int32_t *neg, int n_out, int codes_pad,
                     uint64_t *px, int nw)
{
    int32_t sum = 0;
    for (int w = 0; w < nw; w++) {
        uint64_t bit0 = 0, bit1 = 0;   /* built in registers: one store per word */
        int end = (w + 1) * IFQ_WORD_BITS < n_out ? (w + 1) * IFQ_WORD_BITS : n_out;
        for (int o = w * IFQ_WORD_BITS; o < end; o++) {
            int32_t v = neg[o] ? -acc[o] : acc[o];
            uint64_t m0 = v > t[o], m1 = v > t[codes_pad + o], m2 = v > t[2 * codes_pad + o];
            bit0 |= (m0 ^ m1 ^ m2) << (o % IFQ_WORD_BITS);
            bit1 |= m1 << (o % IFQ_WORD_BITS);
            sum += (int32_t)(m0 + m1 + m2);
        }
        px[w] = bit0;
        px[nw + w] = bit1;
    }
    return sum;
}

static void max_into(int32_t *best, const int32_t *acc, int n)
{
    for (int o = 0; o < n; o++)
        best[o] = acc[o] > best[o] ? acc[o] : best[o];
}

/* The 8 bits of b as 8 bytes of 0 or 1, byte i (least significant first) = bit i. */
static uint64_t spread8(uint64_t b)
{
    b = (b | b << 28) & 0x0000000F0000000Fu;
    b = (b | b << 14) & 0x0003000300030003u;
    return (b | b << 7) & 0x0101010101010101u;
}

/* Eight codes at a time: the bytes of plane 0 plus twice those of plane 1. */
static void unpack_codes(const uint64_t *px, int nw, uint8_t *out)
{
    for (int w = 0; w < nw; w++)
        for (int j = 0; j < IFQ_WORD_BITS; j += 8) {
            const uint64_t v = spread8((px[w] >> j) & 0xFFu) | spread8((px[nw + w] >> j) & 0xFFu) << 1;
            for (int i = 0; i < 8; i++)
                out[w * IFQ_WORD_BITS + j + i] = (uint8_t)(v >> (8 * i));
        }
}

static void head_dot(const uint8_t *codes_in, const int8_t *w, int in_pad, int n_out, int32_t *acc)
{
    for (int o = 0; o < n_out; o++, w += in_pad) {
        int32_t s = 0;
        for (int c = 0; c < in_pad; c++)
            s += codes_in[c] * w[c];
        acc[o] = s;
    }
}

