/* kernels_avx512.c: x86-64 AVX-512 with VPOPCNTDQ (Ice Lake and later), chosen at run time,
 * bit-exact with kernels_portable.c: the binary layers count 512 bits per instruction. The
 * first layer and the head reuse the AVX2 kernels (every AVX-512 CPU has AVX2). */
#include "ifq_internal.h"

#ifdef IFQ_HAVE_X86
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vpopcntdq,avx2,popcnt")))
#define CHUNK_WORDS 8   /* one 512-bit register */

void ifq_avx2_first_dot(const int16_t *patch, const int16_t *w, int pairs, int out_pad, int32_t *acc);
void ifq_avx2_head_dot(const uint8_t *codes, const int8_t *w, int in_pad, int n_out, int32_t *acc);

/* Two outputs per pass share the window loads; rows of w_stride (a multiple of 8) words. */
AVX512 static void bit_dot(const uint64_t *x0, const uint64_t *x1, const uint64_t *w, int words, int w_stride,
                           int n_out, int64_t *p)
{
    const int chunks = (words + CHUNK_WORDS - 1) / CHUNK_WORDS;
    int o = 0;
    for (; o + 1 < n_out; o += 2, w += 2 * (size_t)w_stride) {
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
        for (int c = 0; c < chunks; c++) {
            __m512i a = _mm512_loadu_si512(x0 + c * CHUNK_WORDS), b = _mm512_loadu_si512(x1 + c * CHUNK_WORDS);
            __m512i wa = _mm512_loadu_si512(w + c * CHUNK_WORDS);
            __m512i wb = _mm512_loadu_si512(w + w_stride + c * CHUNK_WORDS);
            s0 = _mm512_add_epi64(s0, _mm512_popcnt_epi64(_mm512_and_si512(a, wa)));
            s0 = _mm512_add_epi64(s0, _mm512_slli_epi64(_mm512_popcnt_epi64(_mm512_and_si512(b, wa)), 1));
            s1 = _mm512_add_epi64(s1, _mm512_popcnt_epi64(_mm512_and_si512(a, wb)));
            s1 = _mm512_add_epi64(s1, _mm512_slli_epi64(_mm512_popcnt_epi64(_mm512_and_si512(b, wb)), 1));
        }
        p[o] = _mm512_reduce_add_epi64(s0);
        p[o + 1] = _mm512_reduce_add_epi64(s1);
    }
    if (o < n_out) {
        __m512i s0 = _mm512_setzero_si512();
        for (int c = 0; c < chunks; c++) {
            __m512i wa = _mm512_loadu_si512(w + c * CHUNK_WORDS);
            s0 = _mm512_add_epi64(s0, _mm512_popcnt_epi64(_mm512_and_si512(_mm512_loadu_si512(x0 + c * CHUNK_WORDS), wa)));
            s0 = _mm512_add_epi64(s0, _mm512_slli_epi64(
                _mm512_popcnt_epi64(_mm512_and_si512(_mm512_loadu_si512(x1 + c * CHUNK_WORDS), wa)), 1));
        }
        p[o] = _mm512_reduce_add_epi64(s0);
    }
}

const ifq_kernel_set ifq_kernels_avx512 = {IFQ_KERNELS_AVX512, ifq_avx2_first_dot, bit_dot, ifq_avx2_head_dot};
#endif
