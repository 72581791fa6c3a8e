/* kernels_avx512.c: x86-64 AVX-512 with VPOPCNTDQ and VNNI (Ice Lake and later), chosen at run time,
 * bit-exact with kernels_portable.c: the binary layers count 512 bits per instruction, the first
 * layer and the thresholds take 16 outputs per register. The head reuses the AVX2 kernel. */
#include "ifq_internal.h"

#ifdef IFQ_HAVE_X86
#include <immintrin.h>
#include <string.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,avx512vnni,avx2,popcnt")))

void ifq_avx2_head_dot(const uint8_t *codes, const int8_t *w, int in_pad, int n_out, int32_t *acc);

/* acc[0..7] = 2 (plane-0 counts + 2 plane-1 counts) - code_sum, narrowed to int32 (it fits:
 * the kernel sets run layers with acc_bound < 2^31). */
AVX512 static void store_acc(int32_t *acc, __m512i plane0, __m512i plane1, __m256i code_sum)
{
    __m256i p = _mm512_cvtepi64_epi32(_mm512_add_epi64(plane0, _mm512_slli_epi64(plane1, 1)));
    _mm256_storeu_si256((__m256i *)acc, _mm256_sub_epi32(_mm256_add_epi32(p, p), code_sum));
}

/* Four window bytes times four int8 weights per instruction (VNNI vpdpbusd: u8 x s8, exact
 * int32 sums), sixteen outputs per register, read straight from the line buffers. */
AVX512 static void first_dot(const uint8_t *const *rows, int k, int row_len, const int16_t *w_pairs,
                             const int8_t *w, int out_pad, int32_t *acc)
{
    (void)w_pairs;
    for (int g = 0; g < out_pad; g += 16) {
        __m512i sum[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};   /* two chains: latency */
        for (int ky = 0; ky < k; ky++)
            for (int j = 0; j < row_len; j += 4) {
                int32_t quad;
                memcpy(&quad, rows[ky] + j, sizeof quad);
                __m512i wv = _mm512_loadu_si512(w + ((size_t)ky * row_len + j) * out_pad + 4 * g);
                sum[ky & 1] = _mm512_dpbusd_epi32(sum[ky & 1], _mm512_set1_epi32(quad), wv);
            }
        _mm512_storeu_si512(acc + g, _mm512_add_epi32(sum[0], sum[1]));
    }
}

/* Sixteen outputs per register, compares straight into mask bits (the code bits as in
 * kernels_portable.c). */
AVX512 static int32_t codes(const int32_t *acc, const int32_t *t, const int32_t *neg, int n_out, int codes_pad,
                            uint64_t *px, int nw)
{
    int32_t sum = 0;
    for (int w = 0; w < nw; w++) {
        uint64_t bit0 = 0, bit1 = 0;
        int end = (w + 1) * IFQ_WORD_BITS < n_out ? (w + 1) * IFQ_WORD_BITS : n_out;
        for (int o = w * IFQ_WORD_BITS; o < end; o += 16) {
            __m512i n = _mm512_loadu_si512(neg + o);
            __m512i v = _mm512_sub_epi32(_mm512_xor_si512(_mm512_loadu_si512(acc + o), n), n);
            unsigned m0 = _mm512_cmpgt_epi32_mask(v, _mm512_loadu_si512(t + o));
            unsigned m1 = _mm512_cmpgt_epi32_mask(v, _mm512_loadu_si512(t + codes_pad + o));
            unsigned m2 = _mm512_cmpgt_epi32_mask(v, _mm512_loadu_si512(t + 2 * codes_pad + o));
            bit0 |= (uint64_t)(m0 ^ m1 ^ m2) << (o % IFQ_WORD_BITS);
            bit1 |= (uint64_t)m1 << (o % IFQ_WORD_BITS);
            sum += _mm_popcnt_u32(m0) + _mm_popcnt_u32(m1) + _mm_popcnt_u32(m2);
        }
        px[w] = bit0;
        px[nw + w] = bit1;
    }
    return sum;
}

/* Eight outputs per register, one 64-bit lane each: the window word is broadcast, ANDed with the
 * eight outputs' weight words and counted by vpopcntq; no horizontal sums. Two groups per pass
 * share the broadcasts. */
AVX512 static void bit_dot(const uint64_t *x0, const uint64_t *x1, const uint64_t *w, int words, int groups,
                           int32_t code_sum, int32_t *acc)
{
    const size_t group = (size_t)words * IFQ_LANES;
    const __m256i sum = _mm256_set1_epi32(code_sum);
    int g = 0;
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
        store_acc(acc + g * IFQ_LANES, s0, t0, sum);
        store_acc(acc + (g + 1) * IFQ_LANES, s1, t1, sum);
    }
    if (g < groups) {
        __m512i s0 = _mm512_setzero_si512(), t0 = _mm512_setzero_si512();
        for (int i = 0; i < words; i++) {
            __m512i w0 = _mm512_loadu_si512(w + (size_t)i * IFQ_LANES);
            s0 = _mm512_add_epi64(s0, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_set1_epi64((long long)x0[i]), w0)));
            t0 = _mm512_add_epi64(t0, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_set1_epi64((long long)x1[i]), w0)));
        }
        store_acc(acc + g * IFQ_LANES, s0, t0, sum);
    }
}

const ifq_kernel_set ifq_kernels_avx512 = {IFQ_KERNELS_AVX512, first_dot, bit_dot, codes, ifq_avx2_head_dot};
#endif
