/* kernels_avx2.c: the kernel set for x86-64 AVX2, chosen at run time (ifq_run.c), bit-exact with
 * kernels_portable.c. The whole file is compiled for AVX2 by a target pragma, so the build
 * needs no -mavx2 and the rest of the library still runs on any x86-64. */
#include "ifq_internal.h"

#ifdef IFQ_HAVE_X86
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,popcnt"))), apply_to = function)
#else
#pragma GCC target("avx2,popcnt")
#endif
#include <immintrin.h>
#include <string.h>

#define LANES 4              /* 64-bit lanes of a 256-bit register */
#define WORDS_PER_FLUSH 10   /* a byte counter gains at most 4 + 4 + 8 + 8 = 24 per word: 10 fit in 255 */

static int32_t hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* Four window bytes at a time: broadcast, spread into two int16 pairs (vpshufb), times pairs of
 * weights (vpmaddwd); eight outputs per register, up to 32 a pass (one broadcast serves four
 * registers, eight independent chains). */
static void first_dot(const uint8_t *const *rows, size_t at, int k, int row_len, const int16_t *w, const int8_t *w_quads,
                      int out_pad, int32_t *acc)
{
    const __m256i lo = _mm256_setr_epi8(0, -1, 1, -1, 0, -1, 1, -1, 0, -1, 1, -1, 0, -1, 1, -1,
                                        0, -1, 1, -1, 0, -1, 1, -1, 0, -1, 1, -1, 0, -1, 1, -1);
    const __m256i hi = _mm256_setr_epi8(2, -1, 3, -1, 2, -1, 3, -1, 2, -1, 3, -1, 2, -1, 3, -1,
                                        2, -1, 3, -1, 2, -1, 3, -1, 2, -1, 3, -1, 2, -1, 3, -1);
    (void)w_quads;
    for (int g = 0; g < out_pad; g += 32) {
        const int n = out_pad - g >= 32 ? 4 : (out_pad - g) / 8;
        __m256i sum01[4], sum23[4];
        IFQ_UNROLL
        for (int i = 0; i < 4; i++)
            sum01[i] = sum23[i] = _mm256_setzero_si256();
        for (int ky = 0; ky < k; ky++)
            for (int j = 0; j < row_len; j += 4) {
                int32_t quad;
                memcpy(&quad, rows[ky] + at + j, sizeof quad);
                const __m256i q = _mm256_set1_epi32(quad);
                const __m256i q01 = _mm256_shuffle_epi8(q, lo), q23 = _mm256_shuffle_epi8(q, hi);
                const int16_t *wj = w + ((size_t)ky * row_len + j) * out_pad + 2 * g;
                IFQ_UNROLL
                for (int i = 0; i < 4; i++)
                    if (i < n) {
                        const __m256i w01 = _mm256_loadu_si256((const __m256i *)(wj + 16 * i));
                        const __m256i w23 = _mm256_loadu_si256((const __m256i *)(wj + 2 * out_pad + 16 * i));
                        sum01[i] = _mm256_add_epi32(sum01[i], _mm256_madd_epi16(q01, w01));
                        sum23[i] = _mm256_add_epi32(sum23[i], _mm256_madd_epi16(q23, w23));
                    }
            }
        for (int i = 0; i < n; i++)
            _mm256_storeu_si256((__m256i *)(acc + g + 8 * i), _mm256_add_epi32(sum01[i], sum23[i]));
    }
}

/* IFQ_FIRST_BLOCK positions, four at a time: the weight loads serve four windows, and their
 * sums are independent chains. */
#define IFQ_OWN_FIRST_DOTS
#define FIRST_GROUP 4
static void first_dots(const uint8_t *const *rows, size_t at, size_t step, int k, int row_len, const int16_t *w,
                       const int8_t *w_quads, int out_pad, int32_t *acc)
{
    const __m256i lo = _mm256_setr_epi8(0, -1, 1, -1, 0, -1, 1, -1, 0, -1, 1, -1, 0, -1, 1, -1,
                                        0, -1, 1, -1, 0, -1, 1, -1, 0, -1, 1, -1, 0, -1, 1, -1);
    const __m256i hi = _mm256_setr_epi8(2, -1, 3, -1, 2, -1, 3, -1, 2, -1, 3, -1, 2, -1, 3, -1,
                                        2, -1, 3, -1, 2, -1, 3, -1, 2, -1, 3, -1, 2, -1, 3, -1);
    (void)w_quads;
    for (int i0 = 0; i0 < IFQ_FIRST_BLOCK; i0 += FIRST_GROUP)
        for (int g = 0; g < out_pad; g += 8) {
            __m256i sum[FIRST_GROUP];
            IFQ_UNROLL
            for (int i = 0; i < FIRST_GROUP; i++)
                sum[i] = _mm256_setzero_si256();
            for (int ky = 0; ky < k; ky++) {
                const uint8_t *row = rows[ky] + at + (size_t)i0 * step;
                for (int j = 0; j < row_len; j += 4) {
                    const int16_t *wj = w + ((size_t)ky * row_len + j) * out_pad + 2 * g;
                    __m256i w01 = _mm256_loadu_si256((const __m256i *)wj);
                    __m256i w23 = _mm256_loadu_si256((const __m256i *)(wj + 2 * out_pad));
                    IFQ_UNROLL
                    for (int i = 0; i < FIRST_GROUP; i++) {
                        int32_t quad;
                        memcpy(&quad, row + i * step + j, sizeof quad);
                        __m256i q = _mm256_set1_epi32(quad);
                        sum[i] = _mm256_add_epi32(sum[i], _mm256_add_epi32(_mm256_madd_epi16(_mm256_shuffle_epi8(q, lo), w01),
                                                                           _mm256_madd_epi16(_mm256_shuffle_epi8(q, hi), w23)));
                    }
                }
            }
            IFQ_UNROLL
            for (int i = 0; i < FIRST_GROUP; i++)
                _mm256_storeu_si256((__m256i *)(acc + (size_t)(i0 + i) * out_pad + g), sum[i]);
        }
}

/* Popcounts of four outputs (64-bit lanes) of one window word: vpshufb nibble lookups, bit-plane 1
 * looking up doubled counts, byte counts summed per lane every WORDS_PER_FLUSH words (vpsadbw). */
static __m256i lane_counts(const uint64_t *x0, const uint64_t *x1, const uint64_t *w, int words)
{
    const __m256i lut1 = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                          0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i lut2 = _mm256_add_epi8(lut1, lut1);
    const __m256i nib = _mm256_set1_epi8(0x0F), zero = _mm256_setzero_si256();
    __m256i total = zero;
    for (int i0 = 0; i0 < words; i0 += WORDS_PER_FLUSH) {
        __m256i bytes = zero;
        int i1 = i0 + WORDS_PER_FLUSH < words ? i0 + WORDS_PER_FLUSH : words;
        for (int i = i0; i < i1; i++) {
            __m256i wv = _mm256_loadu_si256((const __m256i *)(w + (size_t)i * IFQ_LANES));
            __m256i a = _mm256_and_si256(_mm256_set1_epi64x((long long)x0[i]), wv);
            __m256i b = _mm256_and_si256(_mm256_set1_epi64x((long long)x1[i]), wv);
            __m256i ca = _mm256_add_epi8(_mm256_shuffle_epi8(lut1, _mm256_and_si256(a, nib)),
                                         _mm256_shuffle_epi8(lut1, _mm256_and_si256(_mm256_srli_epi16(a, 4), nib)));
            __m256i cb = _mm256_add_epi8(_mm256_shuffle_epi8(lut2, _mm256_and_si256(b, nib)),
                                         _mm256_shuffle_epi8(lut2, _mm256_and_si256(_mm256_srli_epi16(b, 4), nib)));
            bytes = _mm256_add_epi8(bytes, _mm256_add_epi8(ca, cb));
        }
        total = _mm256_add_epi64(total, _mm256_sad_epu8(bytes, zero));
    }
    return total;
}

/* Eight outputs per group as two halves of four lanes; one 256-bit store per group. */
IFQ_HOT void bit_dot(const uint64_t *x0, const uint64_t *x1, const uint64_t *w, int words, int groups,
                    int32_t code_sum, int32_t *acc)
{
    const __m256i low_halves = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7), sum = _mm256_set1_epi32(code_sum);
    for (int g = 0; g < groups; g++, w += (size_t)words * IFQ_LANES) {
        /* the counts fit int32: keep the low half of each 64-bit lane */
        __m128i lo = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(lane_counts(x0, x1, w, words), low_halves));
        __m128i hi = _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(lane_counts(x0, x1, w + LANES, words),
                                                                         low_halves));
        __m256i p = _mm256_set_m128i(hi, lo);
        _mm256_storeu_si256((__m256i *)(acc + g * IFQ_LANES), _mm256_sub_epi32(_mm256_add_epi32(p, p), sum));
    }
}

/* Eight outputs per register: negate where asked ((v ^ n) - n), three compares, bits by movemask;
 * the code bits as in kernels_portable.c. */
IFQ_HOT int32_t codes(const int32_t *acc, const int32_t *t, const int32_t *neg, int n_out, int codes_pad,
                     uint64_t *px, int nw)
{
    int32_t sum = 0;
    for (int w = 0; w < nw; w++) {
        uint64_t bit0 = 0, bit1 = 0;
        int end = (w + 1) * IFQ_WORD_BITS < n_out ? (w + 1) * IFQ_WORD_BITS : n_out;
        for (int o = w * IFQ_WORD_BITS; o < end; o += 8) {
            __m256i n = _mm256_loadu_si256((const __m256i *)(neg + o));
            __m256i v = _mm256_sub_epi32(_mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(acc + o)), n), n);
            unsigned m0 = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(
                _mm256_cmpgt_epi32(v, _mm256_loadu_si256((const __m256i *)(t + o)))));
            unsigned m1 = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(
                _mm256_cmpgt_epi32(v, _mm256_loadu_si256((const __m256i *)(t + codes_pad + o)))));
            unsigned m2 = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(
                _mm256_cmpgt_epi32(v, _mm256_loadu_si256((const __m256i *)(t + 2 * codes_pad + o)))));
            bit0 |= (uint64_t)(m0 ^ m1 ^ m2) << (o % IFQ_WORD_BITS);
            bit1 |= (uint64_t)m1 << (o % IFQ_WORD_BITS);
            sum += _mm_popcnt_u32(m0) + _mm_popcnt_u32(m1) + _mm_popcnt_u32(m2);
        }
        px[w] = bit0;
        px[nw + w] = bit1;
    }
    return sum;
}

static void max_into(int32_t *best, const int32_t *acc, int n)
{
    for (int o = 0; o < n; o += 8) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(acc + o)), b = _mm256_loadu_si256((const __m256i *)(best + o));
        _mm256_storeu_si256((__m256i *)(best + o), _mm256_max_epi32(a, b));
    }
}

/* 32 codes a register: each byte takes the plane byte holding its bit (vpshufb), tests that bit,
 * and becomes 1 (plane 0) plus 2 (plane 1). */
static __m256i spread_bits(uint32_t bits)
{
    const __m256i spread = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
                                            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ull);
    const __m256i b = _mm256_and_si256(_mm256_shuffle_epi8(_mm256_set1_epi32((int)bits), spread), bit);
    return _mm256_cmpeq_epi8(b, bit);
}

static void unpack_codes(const uint64_t *px, int nw, uint8_t *out)
{
    const __m256i one = _mm256_set1_epi8(1), two = _mm256_set1_epi8(2);
    for (int w = 0; w < nw; w++)
        for (int half = 0; half < 2; half++) {
            const __m256i p0 = spread_bits((uint32_t)(px[w] >> (32 * half)));
            const __m256i p1 = spread_bits((uint32_t)(px[nw + w] >> (32 * half)));
            _mm256_storeu_si256((__m256i *)(out + w * IFQ_WORD_BITS + 32 * half),
                                _mm256_add_epi8(_mm256_and_si256(p0, one), _mm256_and_si256(p1, two)));
        }
}

/* Codes (u8, 0..3) times int8 weights (vpmaddubsw: |pair| <= 762, no saturation), widened to int32. */
static void head_dot(const uint8_t *codes_in, const int8_t *w, int in_pad, int n_out, int32_t *acc)
{
    const __m256i ones = _mm256_set1_epi16(1);
    for (int o = 0; o < n_out; o++, w += in_pad) {
        __m256i sum = _mm256_setzero_si256();
        for (int c = 0; c < in_pad; c += 32) {
            __m256i v = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(codes_in + c)),
                                             _mm256_loadu_si256((const __m256i *)(w + c)));
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(v, ones));
        }
        acc[o] = hsum_epi32(sum);
    }
}

#define IFQ_KERNEL_SET ifq_kernels_avx2
#define IFQ_KERNEL_ID IFQ_KERNELS_AVX2
#include "ifq_rows.h"

#if defined(__clang__)
#pragma clang attribute pop
#endif
#endif
