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
#include <string.h>

/* Four window bytes times four int8 weights per lane (u8 x s8, exact int32 sums), sixteen
 * outputs per register, read straight from the line buffers. */
static void first_dot(const uint8_t *const *rows, size_t at, int k, int row_len, const int16_t *w_pairs, const int8_t *w,
                      int out_pad, int32_t *acc)
{
    (void)w_pairs;
    for (int g = 0; g < out_pad; g += 16) {
        __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();   /* two chains: latency */
        for (int ky = 0; ky < k; ky++)
            for (int j = 0; j < row_len; j += 4) {
                int32_t quad;
                memcpy(&quad, rows[ky] + at + j, sizeof quad);
                __m512i wv = _mm512_loadu_si512(w + ((size_t)ky * row_len + j) * out_pad + 4 * g);
                if (j & 4)
                    odd = _mm512_dpbusd_epi32(odd, _mm512_set1_epi32(quad), wv);
                else
                    even = _mm512_dpbusd_epi32(even, _mm512_set1_epi32(quad), wv);
            }
        _mm512_storeu_si512(acc + g, _mm512_add_epi32(even, odd));
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
            __m512i v = _mm512_sub_epi32(_mm512_xor_si512(sum[i], n), n);
            __mmask16 m0 = _mm512_cmpgt_epi32_mask(v, t0), m1 = _mm512_cmpgt_epi32_mask(v, t1);
            __mmask16 m2 = _mm512_cmpgt_epi32_mask(v, t2);
            uint64_t *p = px + (size_t)i * 2 * nw;
            p[word] |= (uint64_t)_cvtmask16_u32(_kxor_mask16(_kxor_mask16(m0, m1), m2)) << shift;
            p[nw + word] |= (uint64_t)_cvtmask16_u32(m1) << shift;
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
            __m512i n = _mm512_loadu_si512(neg + o);
            __m512i v = _mm512_sub_epi32(_mm512_xor_si512(_mm512_loadu_si512(acc + o), n), n);
            __mmask16 m0 = _mm512_cmpgt_epi32_mask(v, _mm512_loadu_si512(t + o));
            __mmask16 m1 = _mm512_cmpgt_epi32_mask(v, _mm512_loadu_si512(t + codes_pad + o));
            __mmask16 m2 = _mm512_cmpgt_epi32_mask(v, _mm512_loadu_si512(t + 2 * codes_pad + o));
            bit0 |= (uint64_t)_cvtmask16_u32(_kxor_mask16(_kxor_mask16(m0, m1), m2)) << (o - base);
            bit1 |= (uint64_t)_cvtmask16_u32(m1) << (o - base);
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

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
