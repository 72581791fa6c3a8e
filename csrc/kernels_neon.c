/* kernels_neon.c: ARM NEON (AArch64, or ARMv7 with NEON), bit-exact with kernels_portable.c.
 * The binary layers, most of the work, count bits with vcntq_u8; the other kernels are the
 * plain C ones of ifq_scalar.h. Compiled only where the compiler targets NEON. */
#include "ifq_internal.h"

#ifdef IFQ_HAVE_NEON
#include <arm_neon.h>

#define WORDS_PER_FLUSH 10   /* a byte counter gains at most 8 + 16 = 24 per word: 10 fit in 255 */

/* Two outputs per register (one 64-bit lane each), four registers a group of eight: the window
 * word is duplicated, ANDed with the weight words, counted per byte; bit-plane 1 counts twice. */
IFQ_HOT void bit_dot(const uint64_t *x0, const uint64_t *x1, const uint64_t *w, int words, int groups,
                    int32_t code_sum, int32_t *acc)
{
    for (int g = 0; g < groups; g++, w += (size_t)words * IFQ_LANES)
        for (int q = 0; q < IFQ_LANES / 2; q++) {
            uint64x2_t total = vdupq_n_u64(0);
            for (int i0 = 0; i0 < words; i0 += WORDS_PER_FLUSH) {
                uint8x16_t bytes = vdupq_n_u8(0);
                int i1 = i0 + WORDS_PER_FLUSH < words ? i0 + WORDS_PER_FLUSH : words;
                for (int i = i0; i < i1; i++) {
                    uint64x2_t wv = vld1q_u64(w + (size_t)i * IFQ_LANES + 2 * q);
                    uint8x16_t a = vcntq_u8(vreinterpretq_u8_u64(vandq_u64(vdupq_n_u64(x0[i]), wv)));
                    uint8x16_t b = vcntq_u8(vreinterpretq_u8_u64(vandq_u64(vdupq_n_u64(x1[i]), wv)));
                    bytes = vaddq_u8(bytes, vaddq_u8(a, vshlq_n_u8(b, 1)));
                }
                total = vaddq_u64(total, vpaddlq_u32(vpaddlq_u16(vpaddlq_u8(bytes))));
            }
            for (int lane = 0; lane < 2; lane++) {
                int32_t p = (int32_t)(lane ? vgetq_lane_u64(total, 1) : vgetq_lane_u64(total, 0));
                acc[g * IFQ_LANES + 2 * q + lane] = 2 * p - code_sum;
            }
        }
}

#define IFQ_SCALAR_OWN_BIT_DOT
#include "ifq_scalar.h"

#define IFQ_KERNEL_SET ifq_kernels_neon
#define IFQ_KERNEL_ID IFQ_KERNELS_NEON
#include "ifq_rows.h"
#endif
