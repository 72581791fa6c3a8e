/* ifq_internal.h: the loaded model and the kernel-set interface (not part of the public API). */
#ifndef IFQ_INTERNAL_H
#define IFQ_INTERNAL_H

#include "ifq.h"

#define IFQ_INT32_LIMIT ((int64_t)1 << 31)
#define IFQ_ROW_SLACK 16   /* readable bytes after a ring: a first-layer window row is read up to row_len */

#define IFQ_MAX_LAYERS 64
#define IFQ_N_THRESHOLDS 3        /* three thresholds per channel give the codes 0..3 */
#define IFQ_VALUES_PER_ANCHOR 5   /* tx, ty, tw, th, objectness */
#define IFQ_WORD_BITS 64
#define IFQ_LANES 8               /* hidden layers: outputs side by side, one 64-bit lane each */
#define IFQ_OUT_ALIGN 16          /* first-layer outputs padded to 16 (one AVX-512 register of int32) */
#define IFQ_CODE_LANES 16         /* outputs thresholded side by side (one AVX-512 register of int32) */
#define IFQ_HEAD_IN_ALIGN 64      /* head input channels padded to 64 (one AVX-512 register of bytes) */
#define IFQ_MAX_CANDIDATES ((uint64_t)1 << 23)   /* a runner's anchors x cells at most */
#define IFQ_VOTE_FIELDS 5         /* decode: per kept box sum(score * x1), y1, x2, y2 and sum(score) */
#define IFQ_FIRST_BLOCK 8         /* first layer: interior positions computed together (independent sums) */
#if defined(__clang__)
#define IFQ_UNROLL _Pragma("unroll")
#elif defined(__GNUC__) && __GNUC__ >= 8
#define IFQ_UNROLL _Pragma("GCC unroll 16")
#else
#define IFQ_UNROLL
#endif

/* The per-position kernels (bit_dot, codes): inlined into the row loops, whose call overhead
 * and spills cost as much as the work in the small early layers. */
#if defined(__GNUC__) || defined(__clang__)
#define IFQ_HOT static inline __attribute__((always_inline))
#else
#define IFQ_HOT static
#endif

/* Sort candidate indices v[0..n) so that before(keys, v[i], v[i + 1]) for all i (ifq_sort.c);
 * `before` must be a strict total order ("a ranks before b"). */
typedef int (*ifq_before_fn)(const void *keys, uint32_t a, uint32_t b);
void ifq_sort_indices(const void *keys, ifq_before_fn before, uint32_t *v, size_t n);

#define IFQ_MAX_INPUTS 4          /* named inputs of one layer (concatenated along channels) */
#define IFQ_MAX_STAGES (2 * IFQ_MAX_LAYERS + 1)   /* the canvas, each layer's output, each concatenation */

/* Layer kinds as the file codes them; FIXED (format version 3): int8 weights on codes, with thresholds. */
enum { IFQ_KIND_FIRST = 0, IFQ_KIND_HIDDEN = 1, IFQ_KIND_HEAD = 2, IFQ_KIND_UPSAMPLE = 3, IFQ_KIND_FIXED = 4 };

/* One layer as the kernels want it; arrays are owned by the model. */
typedef struct {
    char name[16];
    int kind, k, stride, pool, in_ch, out_ch;
    int n_in;               /* inputs concatenated along channels, in this order: */
    int in[IFQ_MAX_INPUTS]; /* their layer indices (-1: the canvas); a row naming none reads the row above */
    int64_t net_stride;     /* input pixels per output cell (saturated far above any valid stride) */
    int64_t acc_bound;      /* worst-case |accumulator|, bias excluded */
    int32_t *thresholds;    /* first / hidden / fixed: (O, 3), widened from i16 / i32 */
    uint8_t *negate;        /* first / hidden / fixed: (O,) 1 = the channel compares -acc */
    int32_t *t_lanes;       /* first / hidden / fixed: (3, codes_pad): threshold k of every output, then
                               INT32_MAX for the padding outputs (their codes are 0) */
    int32_t *neg_lanes;     /* first / hidden / fixed: (codes_pad,) -1 where the channel compares -acc, else 0 */
    int codes_pad;          /* first / hidden / fixed: O rounded up to IFQ_CODE_LANES */
    int row_len;            /* first, fixed: one window row, k * I bytes (kx, c), padded to a multiple of 4 */
    int16_t *w_pairs;       /* first, fixed: (k * row_len / 2, out_pad, 2): weights of padded window values
                               2j, 2j+1 (window row major; zero on the padding) */
    int8_t *w_quads;        /* first, fixed: (k * row_len / 4, out_pad, 4): the same, four values a group */
    int out_pad;            /* first, fixed: O rounded up to IFQ_OUT_ALIGN */
    uint64_t *w_bits;       /* hidden: (groups, w_words, 8): word i of the weight bits of outputs 8g..8g+7,
                               bit j of output o's bits = weight of window value j (1: +1, 0: -1) */
    int w_words;            /* hidden: ceil(k * k * I / 64), window values ordered (ky, kx, channel) */
    int groups;             /* hidden: ceil(O / 8); the padding outputs have zero weights */
    int8_t *w_head;         /* head: (O, in_pad) int8, zero padded */
    int in_pad;             /* head: I rounded up to IFQ_HEAD_IN_ALIGN */
    int32_t *bias;          /* head: (O,) */
    int n_anchors;          /* head: O / 5 */
    int32_t *anchors;       /* head: (n_anchors, 2): w, h in 2^-16 grid cells of this head */
    int32_t out_multiplier; /* head: its output scale is out_multiplier * 2^-out_shift */
    int out_shift;
    int8_t *amx_tiles;      /* hidden, fixed and 1x1 heads, where this CPU runs the AMX set: the weights as
                               B tiles (kernels_avx512.c amx_weights); else NULL */
} ifq_layer;

struct ifq_model {
    int version;              /* the file's format version, 1 to 3 */
    int input_size, n_layers;
    int n_anchors;            /* anchors of the first head */
    int stride;               /* the coarsest stride in the table: input sides are multiples of it */
    int n_heads;
    int heads[IFQ_MAX_LAYERS];   /* layer indices of the heads, in table order */
    ifq_layer layers[IFQ_MAX_LAYERS];
};

typedef struct ifq_kernel_set ifq_kernel_set;

/* Columns of a map row known to be blank (ifq_run.c): [left[0], left[1]) and [right[0], right[1]). */
typedef struct {
    int left[2], right[2];
} ifq_blank;

/* How a stage's rows are made. */
enum { IFQ_STAGE_CANVAS = 0, IFQ_STAGE_LAYER, IFQ_STAGE_CONCAT };

/* One map between layers, held as a ring of rows (ifq_run.c). */
typedef struct {
    int kind;             /* IFQ_STAGE_*: the canvas, a layer's output, or a layer's concatenated input */
    int layer;            /* LAYER: the layer whose output this is; CONCAT: the layer that reads it */
    int n_src;            /* LAYER: 1 (its input stage); CONCAT: the stages concatenated, in order */
    int src[IFQ_MAX_INPUTS];
    int readers;          /* layers and concatenations that read this stage */
    int channels;
    int need;             /* planning: the most rows a read found between it and the newest row */
    int h, w;             /* rows, columns of this map */
    int words;            /* code maps: words per bit-plane per pixel */
    size_t row_bytes;
    int ring;             /* rows held */
    uint8_t *rows;        /* ring * row_bytes */
    int32_t *sums;        /* code maps: ring * w code sums over a pixel's channels */
    ifq_blank *blank;     /* ring: each row's blank columns (ifq_run.c), every stage */
    int next;             /* next row to produce */
} ifq_stage;

/* Everything a runner allocated once, for one input width and height. */
struct ifq_runner {
    const ifq_model *m;
    const ifq_kernel_set *ks;
    int width, height, n_stages;
    int rows;                       /* the first head's rows (the rows a band of ifq_run_band counts) */
    uint64_t heads;                 /* bit h: head h is computed and decoded (ifq_runner_create_heads) */
    ifq_stage st[IFQ_MAX_STAGES];   /* st[0]: canvas rows; then layer outputs and concatenations */
    int in_stage[IFQ_MAX_LAYERS];   /* the stage each layer reads */
    int out_stage[IFQ_MAX_LAYERS];  /* the stage each layer writes (-1: a head) */
    size_t head_offset[IFQ_MAX_LAYERS + 1];   /* head h's int32 values start here in the head buffer */
    int head_next[IFQ_MAX_LAYERS];  /* the run's next row of each head */
    int planning;               /* a dry run at creation: rows are scheduled, not computed */
    int64_t *cand_key;          /* decode: the candidates' ranking keys */
    size_t max_boxes;           /* candidates of all heads at most */
    const uint8_t **window;     /* the input rows of one output row */
    const int32_t **window_sums;  /* and their pixels' code sums */
    uint8_t *zero_row;          /* stands for the zero padding above and below a map */
    uint8_t *patch;             /* first layer: a window at the map's edge, rows of row_len bytes */
    const uint8_t **first_rows; /* first layer: the window's rows */
    int32_t *acc32, *best32;    /* one conv position's accumulators, and their max over a pool window */
    int32_t *block32;           /* first layer: IFQ_FIRST_BLOCK positions' accumulators */
    int64_t *acc64, *best64;    /* the same for layers too wide for int32 */
    uint64_t *x0, *x1;          /* hidden layers: one window of codes as two bit-strings */
    uint8_t *codes;             /* head: one pixel's codes, one byte each */
    ifq_box *cand;              /* decode: candidates above the score threshold */
    uint32_t *order;
    int64_t *vote;              /* decode: per kept box its voters' score-weighted x1, y1, x2, y2 and score sums */
    ifq_row_source source;
    void *user;
    const uint8_t *canvas;
    const ifq_blank *blank_out; /* the row being made: its blank positions (output: the layer's blank pixel) */
    uint64_t *blank[IFQ_MAX_LAYERS];   /* each layer's blank pixel (2 * words words) once computed */
    int32_t blank_sum[IFQ_MAX_LAYERS];
    int blank_ok[IFQ_MAX_LAYERS];
    uint8_t *amx_rows;          /* AMX set: a layer's window rows, one byte per code */
    int32_t *amx_acc;           /* AMX set: accumulators of a block of conv positions */
    size_t feature_bytes, total_bytes;
    /* rows, sums, blank intervals of each stage, blank pixels, tiles, scratch */
    void *blocks[3 * IFQ_MAX_STAGES + 2 * IFQ_MAX_LAYERS + 32];
    int n_blocks;
};

static inline uint8_t *ifq_row_slot(const ifq_stage *s, int y)
{
    return s->rows + (size_t)(y % s->ring) * s->row_bytes;
}

/* One instruction set (one kernels_*.c file, the shared row code of ifq_rows.h compiled for it). */
struct ifq_kernel_set {
    ifq_kernels id;
    /* one output row of a first or hidden layer from the window rows r->window / r->window_sums:
     * codes into dst (the out stage's row), code sums into dst_sums */
    void (*conv_row)(ifq_runner *r, const ifq_layer *L, const ifq_stage *in, const ifq_stage *out,
                     uint8_t *dst, int32_t *dst_sums);
    /* head row y of layer L from its input stage's row `row` into head (A*5, h, w) */
    void (*head_row)(ifq_runner *r, const ifq_layer *L, const ifq_stage *in, const uint8_t *row, int y,
                     int32_t *head);
    /* NULL, or the set's own buffers, made once at runner creation with ifq_block; 0: out of memory */
    int (*prepare)(ifq_runner *r);
    /* NULL, or called before and after the rows of a run, on the thread that runs them (the AMX
     * set configures its tiles once a run, not once a row) */
    void (*run_begin)(void);
    void (*run_end)(void);
};

/* A zeroed block of count * size bytes owned by the runner (freed with it); NULL on failure. */
void *ifq_block(ifq_runner *r, size_t count, size_t size);

extern const ifq_kernel_set ifq_kernels_portable;
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define IFQ_HAVE_X86 1
extern const ifq_kernel_set ifq_kernels_avx2;
extern const ifq_kernel_set ifq_kernels_avx512;
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 11 && defined(__linux__)
#define IFQ_HAVE_AMX 1   /* GCC's AMX intrinsics; tile data needs the kernel's permission (Linux) */
extern const ifq_kernel_set ifq_kernels_amx;
/* The AMX set's weight tiles of every layer it runs (layer amx_tiles), made once per model by the
 * loader on a CPU that runs the set, so runners share them; 0 if out of memory. */
int ifq_amx_prepare_model(ifq_model *m);
#endif
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


/* Metadata check (ifq_json.c): 1 if `text` is UTF-8 holding one JSON object, as Python reads it. */
int ifq_json_object_ok(const uint8_t *text, size_t n);

#endif
