/* ifq_internal.h: the loaded model and the kernel-set interface (not part of the public API). */
#ifndef IFQ_INTERNAL_H
#define IFQ_INTERNAL_H

#include "ifq.h"

#define IFQ_MAX_LAYERS 64
#define IFQ_MAX_ANCHORS 64
#define IFQ_N_THRESHOLDS 3        /* three thresholds per channel give the codes 0..3 */
#define IFQ_VALUES_PER_ANCHOR 5   /* tx, ty, tw, th, objectness */
#define IFQ_WORD_BITS 64
#define IFQ_WORD_ALIGN 8          /* weight rows and gathered windows: multiples of 8 words (512 bits) */
#define IFQ_OUT_ALIGN 8           /* first-layer outputs padded to 8 (one AVX2 register of int32) */
#define IFQ_HEAD_IN_ALIGN 64      /* head input channels padded to 64 (one AVX-512 register of bytes) */

enum { IFQ_KIND_FIRST = 0, IFQ_KIND_HIDDEN = 1, IFQ_KIND_HEAD = 2 };

/* One layer as the kernels want it; arrays are owned by the model. */
typedef struct {
    char name[16];
    int kind, k, stride, pool, in_ch, out_ch;
    int64_t acc_bound;      /* worst-case |accumulator|, bias excluded */
    int32_t *thresholds;    /* first / hidden: (O, 3), widened from i16 / i32 */
    uint8_t *negate;        /* first / hidden: (O,) 1 = the channel compares -acc */
    int16_t *w_pairs;       /* first: (pairs, out_pad, 2): weights of window values 2j, 2j+1 (order ky, kx, c) */
    int patch_pairs;        /* first: ceil(k*k*I / 2) */
    int out_pad;            /* first: O rounded up to IFQ_OUT_ALIGN */
    uint64_t *w_bits;       /* hidden: (O, w_stride) words, bit j = weight of window value j (1: +1) */
    int window_bits;        /* hidden: k*k*I, window values ordered (ky, kx, channel) */
    int w_words;            /* hidden: ceil(window_bits / 64), the words that hold bits */
    int w_stride;           /* hidden: w_words rounded up to IFQ_WORD_ALIGN, zero filled */
    int8_t *w_head;         /* head: (O, in_pad) int8, zero padded */
    int in_pad;             /* head: I rounded up to IFQ_HEAD_IN_ALIGN */
    int32_t *bias;          /* head: (O,) */
} ifq_layer;

struct ifq_model {
    int input_size, n_layers, n_anchors, stride, separated;
    int32_t out_multiplier;
    int out_shift;
    int32_t anchors[IFQ_MAX_ANCHORS][2];   /* w, h in 2^-16 grid cells */
    ifq_layer layers[IFQ_MAX_LAYERS];
};

/* One instruction set: the inner products; everything around them is shared C. */
typedef struct {
    ifq_kernels id;
    /* first layer: acc[o] = sum_j patch[2j] * w[j][o][0] + patch[2j+1] * w[j][o][1], o < out_pad */
    void (*first_dot)(const int16_t *patch, const int16_t *w_pairs, int pairs, int out_pad,
                      int32_t *acc);
    /* hidden: p[o] = popcount(x0 & w_o) + 2 popcount(x1 & w_o) over `words` words (rows of
     * w_stride words; words rounded up to IFQ_WORD_ALIGN may be read: they are zero) */
    void (*bit_dot)(const uint64_t *x0, const uint64_t *x1, const uint64_t *w, int words,
                    int w_stride, int n_out, int64_t *p);
    /* head: acc[o] = sum_c codes[c] * w[o][c] over in_pad values (codes 0..3) */
    void (*head_dot)(const uint8_t *codes, const int8_t *w, int in_pad, int n_out, int32_t *acc);
} ifq_kernel_set;

extern const ifq_kernel_set ifq_kernels_portable;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define IFQ_HAVE_X86 1
extern const ifq_kernel_set ifq_kernels_avx2;
extern const ifq_kernel_set ifq_kernels_avx512;
#endif
#if defined(__ARM_NEON) || defined(__ARM_NEON__)
#define IFQ_HAVE_NEON 1
extern const ifq_kernel_set ifq_kernels_neon;
#endif

/* Fixed-point decode tables (ifq_tables.c, generated from engine/decode.py). */
#define IFQ_LUT_STEP_BITS 8
#define IFQ_SIGMOID_LO (-16)
#define IFQ_SIGMOID_HI 16
#define IFQ_EXP_LO (-16)
#define IFQ_EXP_HI 10
#define IFQ_SIGMOID_LEN (((IFQ_SIGMOID_HI - IFQ_SIGMOID_LO) << IFQ_LUT_STEP_BITS) + 1)
#define IFQ_EXP_LEN (((IFQ_EXP_HI - IFQ_EXP_LO) << IFQ_LUT_STEP_BITS) + 1)
extern const int32_t ifq_sigmoid_lut[IFQ_SIGMOID_LEN];
extern const int32_t ifq_exp_lut[IFQ_EXP_LEN];

/* The runner's candidate buffers, for the decoder (ifq_run.c). */
ifq_box *ifq_runner_candidates(ifq_runner *r, uint32_t **order, const ifq_model **m);

/* Metadata check (ifq_json.c): 1 if `text` is UTF-8 holding one JSON object, as Python reads it. */
int ifq_json_object_ok(const uint8_t *text, size_t n);

#endif
