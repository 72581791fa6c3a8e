/* kernels_avx2.c: the kernel set for x86-64 AVX2, chosen at run time (ifq_run.c), bit-exact with
 * kernels_portable.c. Compiled with function target attributes, so the build needs no -mavx2
 * and the rest of the library still runs on any x86-64. */
#include "ifq_internal.h"

#ifdef IFQ_HAVE_X86
#include <immintrin.h>
#include <string.h>

#define AVX2 __attribute__((target("avx2,popcnt")))
#define CHUNK_WORDS 4        /* one 256-bit register */
#define CHUNKS_PER_FLUSH 10  /* a byte counter gains at most 4 + 4 + 8 + 8 = 24 per chunk: 10 fit in 255 */

AVX2 static int64_t hsum_epi64(__m256i v)
{
    __m128i s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    return _mm_cvtsi128_si64(s) + _mm_extract_epi64(s, 1);
}

AVX2 static int32_t hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

/* Pairs of window values times pairs of weights (vpmaddwd), eight outputs per register. */
AVX2 void ifq_avx2_first_dot(const int16_t *patch, const int16_t *w, int pairs, int out_pad, int32_t *acc)
{
    for (int g = 0; g < out_pad; g += 8) {
        __m256i sum = _mm256_setzero_si256();
        for (int j = 0; j < pairs; j++) {
            int32_t pair;
            memcpy(&pair, patch + 2 * j, sizeof pair);
            __m256i wv = _mm256_loadu_si256((const __m256i *)(w + ((size_t)j * out_pad + g) * 2));
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_set1_epi32(pair), wv));
        }
        _mm256_storeu_si256((__m256i *)(acc + g), sum);
    }
}

/* Popcounts by nibble lookup (vpshufb); bit-plane 1 looks up doubled counts. */
AVX2 static void bit_dot(const uint64_t *x0, const uint64_t *x1, const uint64_t *w, int words, int w_stride,
                         int n_out, int64_t *p)
{
    const __m256i lut1 = _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4,
                                          0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4);
    const __m256i lut2 = _mm256_add_epi8(lut1, lut1);
    const __m256i nib = _mm256_set1_epi8(0x0F), zero = _mm256_setzero_si256();
    const int chunks = (words + CHUNK_WORDS - 1) / CHUNK_WORDS;
    for (int o = 0; o < n_out; o++, w += w_stride) {
        __m256i total = zero;
        for (int c0 = 0; c0 < chunks; c0 += CHUNKS_PER_FLUSH) {
            __m256i bytes = zero;
            int c1 = c0 + CHUNKS_PER_FLUSH < chunks ? c0 + CHUNKS_PER_FLUSH : chunks;
            for (int c = c0; c < c1; c++) {
                __m256i wv = _mm256_loadu_si256((const __m256i *)(w + c * CHUNK_WORDS));
                __m256i a = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x0 + c * CHUNK_WORDS)), wv);
                __m256i b = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x1 + c * CHUNK_WORDS)), wv);
                __m256i ca = _mm256_add_epi8(_mm256_shuffle_epi8(lut1, _mm256_and_si256(a, nib)),
                                             _mm256_shuffle_epi8(lut1, _mm256_and_si256(_mm256_srli_epi16(a, 4), nib)));
                __m256i cb = _mm256_add_epi8(_mm256_shuffle_epi8(lut2, _mm256_and_si256(b, nib)),
                                             _mm256_shuffle_epi8(lut2, _mm256_and_si256(_mm256_srli_epi16(b, 4), nib)));
                bytes = _mm256_add_epi8(bytes, _mm256_add_epi8(ca, cb));
            }
            total = _mm256_add_epi64(total, _mm256_sad_epu8(bytes, zero));
        }
        p[o] = hsum_epi64(total);
    }
}

/* Codes (u8, 0..3) times int8 weights (vpmaddubsw: |pair| <= 762, no saturation), widened to int32. */
AVX2 void ifq_avx2_head_dot(const uint8_t *codes, const int8_t *w, int in_pad, int n_out, int32_t *acc)
{
    const __m256i ones = _mm256_set1_epi16(1);
    for (int o = 0; o < n_out; o++, w += in_pad) {
        __m256i sum = _mm256_setzero_si256();
        for (int c = 0; c < in_pad; c += 32) {
            __m256i v = _mm256_maddubs_epi16(_mm256_loadu_si256((const __m256i *)(codes + c)),
                                             _mm256_loadu_si256((const __m256i *)(w + c)));
            sum = _mm256_add_epi32(sum, _mm256_madd_epi16(v, ones));
        }
        acc[o] = hsum_epi32(sum);
    }
}

const ifq_kernel_set ifq_kernels_avx2 = {IFQ_KERNELS_AVX2, ifq_avx2_first_dot, bit_dot, ifq_avx2_head_dot};
#endif
