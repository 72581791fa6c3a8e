/* ifq.h: the native IFQ-Tinier-YOLO runtime (C99, libc only).
 *
 * Load an .ifq model (docs/MODEL_FORMAT.md, versions 1 to 3: a chain of layers with one head, or
 * a layer graph with several) from bytes, run the integer network on a letterboxed BGR canvas,
 * decode the heads in fixed point and run one integer NMS over all of them. Bit-exact with the
 * numpy engine (ifq_tinier_yolo/engine): the same head integers, the same boxes. Outside the
 * network, ifq_nms_vote merges boxes of several input sizes (in double, as engine/nms.py does).
 *
 * The canvas may be any width and height that are multiples of the model's stride (a letterboxed
 * image need not be square). The head buffer holds every head, one after the other in table
 * order, each (A*5, rows, cols) channel-major: head h starts at ifq_runner_head_offset(r, h), its
 * sides are ifq_runner_head_rows and ifq_runner_head_cols.
 *
 *     ifq_model *m; ifq_runner *r; ifq_error e;
 *     if (ifq_model_load(bytes, n, &m, &e) != IFQ_OK) puts(e.message);
 *     ifq_runner_create(m, 416, 320, IFQ_KERNELS_AUTO, &r, &e);   // every buffer, once
 *     ifq_run(r, canvas, head);                               // no allocation from here on
 *     ifq_decode(r, head, conf_q16, 450, 1000, -1, boxes, max_boxes, &n_boxes);
 *
 * A model is read-only after loading and may be shared; a runner belongs to one thread.
 * Every function that can fail returns an ifq_status and never aborts.
 */
#ifndef IFQ_H
#define IFQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define IFQ_FORMAT_VERSION 3     /* the newest .ifq format version this library reads (1 to 3) */
#define IFQ_BOX_FRAC_BITS 8      /* ifq_box coordinates are in 2^-8 network pixels */
#define IFQ_SCORE_FRAC_BITS 16   /* ifq_box scores are in 2^-16 */

typedef enum {
    IFQ_OK = 0,
    IFQ_ERR_EMPTY,        /* zero bytes */
    IFQ_ERR_FOREIGN,      /* wrong magic bytes */
    IFQ_ERR_TRUNCATED,    /* shorter than the header announces */
    IFQ_ERR_VERSION,      /* a format version other than 1, 2 and 3 */
    IFQ_ERR_TRAILING,     /* bytes after the end of the model */
    IFQ_ERR_CORRUPTED,    /* CRC-32 mismatch */
    IFQ_ERR_INVALID,      /* a field or array breaks the format's rules */
    IFQ_ERR_NOMEM,        /* an allocation failed (or a size overflows size_t) */
    IFQ_ERR_ARGUMENT,     /* a bad argument (input size, null pointer, kernels not on this CPU) */
    IFQ_ERR_BUFFER        /* the caller's box buffer is too small */
} ifq_status;

typedef struct {
    char message[256];    /* one line, no newline; "" on success */
} ifq_error;

/* Kernel sets: one source file per instruction set, each bit-exact with the portable one. */
typedef enum {
    IFQ_KERNELS_AUTO = 0,    /* the fastest set this CPU runs */
    IFQ_KERNELS_PORTABLE,    /* plain C99 */
    IFQ_KERNELS_AVX2,        /* x86-64 AVX2 */
    IFQ_KERNELS_AVX512,      /* x86-64 AVX-512 F/BW/VL + VPOPCNTDQ + VNNI */
    IFQ_KERNELS_NEON,        /* AArch64 / ARMv7 NEON */
    IFQ_KERNELS_AMX          /* x86-64 AVX-512 with AMX-INT8 tiles for the binary layers (Linux, GCC builds) */
} ifq_kernels;

typedef struct ifq_model ifq_model;
typedef struct ifq_runner ifq_runner;

/* One detection in network pixels (2^-8) with its score (2^-16) and head objectness integer. */
typedef struct {
    int32_t x1, y1, x2, y2;
    int32_t score;
    int32_t objectness;
} ifq_box;

/* Parse and check a whole .ifq image; the model keeps no pointer into `data`. */
ifq_status ifq_model_load(const uint8_t *data, size_t size, ifq_model **model, ifq_error *err);
void ifq_model_free(ifq_model *model);
int ifq_model_input_size(const ifq_model *model);   /* default canvas side (the longer one) in pixels */
int ifq_model_num_layers(const ifq_model *model);
int ifq_model_num_anchors(const ifq_model *model);  /* anchors of the first head */
int ifq_model_stride(const ifq_model *model);       /* the coarsest stride: canvas sides are multiples of it */
int ifq_model_num_heads(const ifq_model *model);    /* heads, 1 for a chain */
int ifq_model_head_anchors(const ifq_model *model, int head);   /* anchors of head `head` (table order) */
int ifq_model_head_stride(const ifq_model *model, int head);    /* input pixels per grid cell of that head */

/* 1 if this CPU (and this build) runs the kernel set, else 0; AUTO is always 1. */
int ifq_kernels_supported(ifq_kernels kernels);
const char *ifq_kernels_name(ifq_kernels kernels);

/* All buffers for one canvas of width x height pixels (positive multiples of the stride),
 * allocated here. */
ifq_status ifq_runner_create(const ifq_model *model, int width, int height, ifq_kernels kernels,
                             ifq_runner **runner, ifq_error *err);
/* The same for the heads in `heads` only (bit h: head h, in table order; IFQ_ALL_HEADS: every
 * head; bits beyond the model's heads are ignored, none of its heads: IFQ_ERR_ARGUMENT). Layers
 * that only the other heads read are not computed, the other heads' part of the head buffer is
 * left as it was, and ifq_decode skips them. */
#define IFQ_ALL_HEADS (~(uint64_t)0)
ifq_status ifq_runner_create_heads(const ifq_model *model, int width, int height, ifq_kernels kernels,
                                   uint64_t heads, ifq_runner **runner, ifq_error *err);
void ifq_runner_free(ifq_runner *runner);
ifq_kernels ifq_runner_kernels(const ifq_runner *runner);   /* the set AUTO resolved to */
size_t ifq_runner_head_len(const ifq_runner *runner);       /* int32 values of all heads: sum of A*5*rows*cols */
int ifq_runner_head_rows(const ifq_runner *runner, int head);          /* height / the head's stride */
int ifq_runner_head_cols(const ifq_runner *runner, int head);          /* width / the head's stride */
size_t ifq_runner_head_offset(const ifq_runner *runner, int head);     /* where it starts in the buffer */
size_t ifq_runner_max_boxes(const ifq_runner *runner);      /* A*rows*cols of its heads: no decode returns more */
/* Feature-map bytes the runner holds at once: input and code line buffers plus the int32
 * heads (the caller's, counted here); working scratch inside a layer is not counted. */
size_t ifq_runner_feature_bytes(const ifq_runner *runner);
size_t ifq_runner_total_bytes(const ifq_runner *runner);    /* every byte the runner allocated */

/* Fill `row` (width*3 bytes, BGR) with canvas row y; rows are asked for once each, in increasing
 * order (a row that no window reads may be skipped). */
typedef void (*ifq_row_source)(void *user, int y, uint8_t *row);

/* Run the network: canvas rows -> the int32 heads (each (A*5, rows, cols), channel-major, acc + bias). */
ifq_status ifq_run_rows(ifq_runner *runner, ifq_row_source source, void *user, int32_t *head);
/* The same on a whole uint8 (height, width, 3) BGR canvas. */
ifq_status ifq_run(ifq_runner *runner, const uint8_t *canvas, int32_t *head);
/* Only rows y_begin <= y < y_end of the first head, and the same part of every other head (rows
 * y * rows_h / rows_0 at the band's ends), into the full-size head buffer; the rows they need and
 * no others are computed. Two runners on two threads fill the two halves of every head. */
ifq_status ifq_run_band(ifq_runner *runner, const uint8_t *canvas, int32_t *head, int y_begin, int y_end);

/* Fixed-point decode of each head the runner computes (its own anchors, scale and stride) + one
 * greedy integer NMS over all their candidates. Keeps score >= conf_q16 (2^-16); suppresses IoU > iou_num / den and,
 * if contain_num >= 0, more than contain_num / den of a box's own area inside a kept one. Each kept
 * box is then voted: its corners become the score-weighted means of its own and those of the
 * boxes it suppressed by IoU (the first kept box that suppresses a candidate gets its vote),
 * floor((2 * sum(score * corner) + sum(score)) / (2 * sum(score))); unchanged if that sum is 0. Boxes
 * best first: requantized objectness (2^-16, saturated to +-2^14) descending, then the head
 * integer, then head (table order), anchor, row, column (engine/runtime.py rank_key). */
ifq_status ifq_decode(ifq_runner *runner, const int32_t *head, int32_t conf_q16, int32_t iou_num,
                      int32_t den, int32_t contain_num, ifq_box *boxes, size_t max_boxes,
                      size_t *n_boxes);

/* Greedy NMS with box voting on n double boxes (x1, y1, x2, y2 each; any units), as
 * engine/nms.py nms_vote does on float boxes: candidates by rank descending (ties: lower index
 * first; a NaN rank is IFQ_ERR_ARGUMENT), a candidate suppressed by the first kept box it overlaps
 * with IoU > iou_num / den or, if contain_num >= 0, with more than contain_num / den of its own
 * area inside it (tested as inter * den > iou_num * union and inter * den > contain_num * area).
 * Each kept box becomes the weighted mean of itself and the boxes it suppressed by IoU, summed in
 * candidate order (unchanged where its weights sum to 0 or less). Writes the kept candidates'
 * indices, best first, to keep[0..*n_keep) and their voted boxes to voted[0..4 * *n_keep) (room
 * for n of each: keep n int64, voted 4 n doubles); `work` holds ifq_nms_vote_work_bytes(n) bytes,
 * aligned for double. The Python Detector merges its pyramid levels with it. */
size_t ifq_nms_vote_work_bytes(size_t n);   /* 0 if n is over the candidate limit (2^23) */
ifq_status ifq_nms_vote(const double *boxes, const double *ranks, const double *weights, size_t n,
                        int32_t iou_num, int32_t den, int32_t contain_num, void *work, int64_t *keep,
                        double *voted, size_t *n_keep);

#ifdef __cplusplus
}
#endif

#endif
