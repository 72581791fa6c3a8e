/* kernels_portable.c: the reference kernel set in plain C99 (every other set must equal it). */
#include "ifq_internal.h"

static int popcount64(uint64_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_popcountll(x);
#else
    x = x - ((x >> 1) & 0x5555555555555555u);
    x = (x & 0x3333333333333333u) + ((x >> 2) & 0x3333333333333333u);
    x = (x + (x >> 4)) & 0x0F0F0F0F0F0F0F0Fu;
    return (int)((x * 0x0101010101010101u) >> 56);
#endif
}

static void first_dot(const int16_t *patch, const int16_t *w, int pairs, int out_pad, int32_t *acc)
{
    for (int o = 0; o < out_pad; o++)
        acc[o] = 0;
    for (int j = 0; j < pairs; j++) {
        const int32_t a = patch[2 * j], b = patch[2 * j + 1];
        const int16_t *wj = w + (size_t)j * out_pad * 2;
        for (int o = 0; o < out_pad; o++)
            acc[o] += a * wj[2 * o] + b * wj[2 * o + 1];
    }
}

static void bit_dot(const uint64_t *x0, const uint64_t *x1, const uint64_t *w, int words, int w_stride,
                    int n_out, int64_t *p)
{
    for (int o = 0; o < n_out; o++, w += w_stride) {
        int64_t s = 0;
        for (int i = 0; i < words; i++)
            s += popcount64(x0[i] & w[i]) + 2 * popcount64(x1[i] & w[i]);
        p[o] = s;
    }
}

static void head_dot(const uint8_t *codes, const int8_t *w, int in_pad, int n_out, int32_t *acc)
{
    for (int o = 0; o < n_out; o++, w += in_pad) {
        int32_t s = 0;
        for (int c = 0; c < in_pad; c++)
            s += codes[c] * w[c];
        acc[o] = s;
    }
}

const ifq_kernel_set ifq_kernels_portable = {IFQ_KERNELS_PORTABLE, first_dot, bit_dot, head_dot};
