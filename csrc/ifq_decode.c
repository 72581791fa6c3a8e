/* ifq_decode.c: fixed-point YOLOv2 decode and greedy integer NMS, as engine/decode.py and
 * engine/nms.py do them (same tables, same rounding, same order), on the runner's buffers. */
#include "ifq_internal.h"

#define REQUANT_FRAC_BITS 16   /* requantized head values: 2^-16 */
#define ANCHOR_FRAC_BITS 16
#define BOX_LIMIT_PX 16384     /* box coordinates saturate at +-2^14 network pixels */

/* floor(x / 2^s) for any int64 x (no implementation-defined shift of a negative value). */
static int64_t shr_floor(int64_t x, int s) { return x >= 0 ? x >> s : -((-(x + 1)) >> s) - 1; }

/* x / 2^s rounded half up, s >= 1 (decode.round_shift). */
static int64_t round_shift(int64_t x, int s) { return shr_floor(x + ((int64_t)1 << (s - 1)), s); }

/* decode.requantize: head integer -> value in 2^-16, rounded half up. */
static int64_t requantize(int32_t h, int32_t multiplier, int shift)
{
    return round_shift((int64_t)h * multiplier, shift - REQUANT_FRAC_BITS);
}

/* decode.lut_lookup: r in 2^-16 saturated to [lo, hi], table interpolated linearly. */
static int64_t lookup(int64_t r, const int32_t *table, int len, int lo, int hi)
{
    const int frac_shift = REQUANT_FRAC_BITS - IFQ_LUT_STEP_BITS;
    int64_t pos = r - (int64_t)lo * (1 << REQUANT_FRAC_BITS);
    int64_t top = (int64_t)(hi - lo) << REQUANT_FRAC_BITS;
    pos = pos < 0 ? 0 : pos > top ? top : pos;
    int64_t idx = pos >> frac_shift;
    idx = idx < len - 2 ? idx : len - 2;
    int64_t frac = pos - (idx << frac_shift);
    return table[idx] + round_shift((int64_t)(table[idx + 1] - table[idx]) * frac, frac_shift);
}

static int64_t sigmoid_q(int64_t r)
{
    return lookup(r, ifq_sigmoid_lut, IFQ_SIGMOID_LEN, IFQ_SIGMOID_LO, IFQ_SIGMOID_HI);
}

static int64_t exp_q(int64_t r) { return lookup(r, ifq_exp_lut, IFQ_EXP_LEN, IFQ_EXP_LO, IFQ_EXP_HI); }

static int64_t clamp(int64_t v, int64_t lim) { return v < -lim ? -lim : v > lim ? lim : v; }

#define RANK_LIMIT ((int64_t)1 << 30)   /* requantized objectness saturates here in the rank key */

/* runtime.rank_key: (clip(requantized objectness) << 32) + (objectness + 2^31), as int64. */
static int64_t rank_key(int64_t requantized, int32_t objectness)
{
    int64_t q = clamp(requantized, RANK_LIMIT);
    return q * ((int64_t)1 << 32) + ((int64_t)objectness + IFQ_INT32_LIMIT);
}

/* Rank: higher key first, then lower candidate index (nms.nms's lexsort). */
static int before(const void *keys, uint32_t a, uint32_t b)
{
    const int64_t *key = keys;
    return key[a] != key[b] ? key[a] > key[b] : a < b;
}

static int64_t area(const ifq_box *b) { return ((int64_t)b->x2 - b->x1) * ((int64_t)b->y2 - b->y1); }

enum { KEPT, BY_IOU, BY_CONTAINMENT };

/* nms._greedy: is candidate b suppressed by the kept box a, and how (only IoU votes)? */
static int suppressed(const ifq_box *a, const ifq_box *b, int64_t iou_num, int64_t den, int64_t contain_num)
{
    int64_t iw = (int64_t)(a->x2 < b->x2 ? a->x2 : b->x2) - (a->x1 > b->x1 ? a->x1 : b->x1);
    int64_t ih = (int64_t)(a->y2 < b->y2 ? a->y2 : b->y2) - (a->y1 > b->y1 ? a->y1 : b->y1);
    int64_t inter = (iw > 0 ? iw : 0) * (ih > 0 ? ih : 0);
    int64_t uni = area(a) + area(b) - inter;
    if (inter * den > iou_num * uni)
        return BY_IOU;
    return contain_num >= 0 && inter * den > contain_num * area(b) ? BY_CONTAINMENT : KEPT;
}

/* Box b votes for a kept box: score-weighted coordinate sums (|coordinate| <= 2^22, score <= 2^16,
 * at most IFQ_MAX_CANDIDATES = 2^23 voters: |sum| <= 2^61, so 2 * sum + weight fits int64). */
static void add_vote(int64_t *acc, const ifq_box *b)
{
    acc[0] += (int64_t)b->score * b->x1;
    acc[1] += (int64_t)b->score * b->y1;
    acc[2] += (int64_t)b->score * b->x2;
    acc[3] += (int64_t)b->score * b->y2;
    acc[4] += b->score;
}

/* nms.nms_vote's mean: floor((2 * sum + weight) / (2 * weight)), weight > 0 (C division truncates). */
static int32_t vote_mean(int64_t sum, int64_t weight)
{
    int64_t num = 2 * sum + weight, den = 2 * weight;
    int64_t q = num / den;
    return (int32_t)(q - (num % den < 0));
}

/* The lowest objectness integer whose score reaches conf_q16 (INT64_MAX: none). The score is
 * sigmoid_q(requantize(h)), non-decreasing in h (out_multiplier > 0, the table non-decreasing),
 * so comparing the integer is the same test as computing the score: most cells need neither
 * the requantization nor the table. */
static int64_t lowest_objectness(const ifq_layer *L, int32_t conf_q16)
{
    if (sigmoid_q(requantize(INT32_MAX, L->out_multiplier, L->out_shift)) < conf_q16)
        return INT64_MAX;
    int64_t lo = INT32_MIN, hi = INT32_MAX;   /* the answer lies in [lo, hi] */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (sigmoid_q(requantize((int32_t)mid, L->out_multiplier, L->out_shift)) >= conf_q16)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

/* decode.decode_fixed of one head (rows x cols, channel-major): candidates at or above conf_q16
 * appended at cand[n...] with their keys; returns the new count. */
static size_t decode_one(const ifq_layer *L, int64_t stride, int rows, int cols, const int32_t *head, int32_t conf_q16,
                         ifq_box *cand, int64_t *key, uint32_t *order, size_t n)
{
    const size_t plane = (size_t)rows * cols;
    const int64_t lim = (int64_t)BOX_LIMIT_PX << IFQ_BOX_FRAC_BITS;
    const int to_box = IFQ_SCORE_FRAC_BITS - IFQ_BOX_FRAC_BITS;
    const int wh_shift = 16 + ANCHOR_FRAC_BITS - IFQ_BOX_FRAC_BITS;   /* exp (2^-16) x anchor (2^-16) */
    const int64_t min_obj = lowest_objectness(L, conf_q16);
    for (int a = 0; a < L->n_anchors; a++)
        for (size_t cell = 0; cell < plane; cell++) {
            const int32_t *h = head + (size_t)a * IFQ_VALUES_PER_ANCHOR * plane + cell;   /* field f at h[f * plane] */
            if (h[4 * plane] < min_obj)   /* else the score reaches conf_q16 */
                continue;
            int64_t obj = requantize(h[4 * plane], L->out_multiplier, L->out_shift);
            int64_t score = sigmoid_q(obj);
            int64_t row = (int64_t)(cell / (size_t)cols), col = (int64_t)(cell % (size_t)cols);
            int64_t t[4];
            for (int f = 0; f < 4; f++)
                t[f] = requantize(h[(size_t)f * plane], L->out_multiplier, L->out_shift);
            int64_t cx = round_shift(((col << IFQ_SCORE_FRAC_BITS) + sigmoid_q(t[0])) * stride, to_box);
            int64_t cy = round_shift(((row << IFQ_SCORE_FRAC_BITS) + sigmoid_q(t[1])) * stride, to_box);
            int64_t w = round_shift(exp_q(t[2]) * L->anchors[2 * a] * stride, wh_shift);
            int64_t hh = round_shift(exp_q(t[3]) * L->anchors[2 * a + 1] * stride, wh_shift);
            int64_t x1 = cx - (w >> 1), y1 = cy - (hh >> 1);   /* w, hh >= 0 */
            ifq_box *b = &cand[n];
            b->x1 = (int32_t)clamp(x1, lim);
            b->y1 = (int32_t)clamp(y1, lim);
            b->x2 = (int32_t)clamp(x1 + w, lim);
            b->y2 = (int32_t)clamp(y1 + hh, lim);
            b->score = (int32_t)score;
            b->objectness = h[4 * plane];
            key[n] = rank_key(obj, h[4 * plane]);
            order[n] = (uint32_t)n;
            n++;
        }
    return n;
}

ifq_status ifq_decode(ifq_runner *r, const int32_t *head, int32_t conf_q16, int32_t iou_num, int32_t den,
                      int32_t contain_num, ifq_box *boxes, size_t max_boxes, size_t *n_boxes)
{
    if (!r || !head || !n_boxes || (!boxes && max_boxes) || den <= 0 || iou_num < 0)
        return IFQ_ERR_ARGUMENT;
    const ifq_model *m = r->m;
    size_t n = 0;
    for (int h = 0; h < m->n_heads; h++) {
        if (!(r->heads >> h & 1))
            continue;
        const ifq_layer *L = &m->layers[m->heads[h]];
        n = decode_one(L, L->net_stride, ifq_runner_head_rows(r, h), ifq_runner_head_cols(r, h),
                       head + ifq_runner_head_offset(r, h), conf_q16, r->cand, r->cand_key, r->order, n);
    }
    ifq_sort_indices(r->cand_key, before, r->order, n);
    const int keep_all = iou_num >= den && contain_num < 0;   /* no IoU exceeds 1: nothing is suppressed */
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        const ifq_box *b = &r->cand[r->order[i]];
        int how = KEPT;
        size_t j = 0;
        for (; j < kept && how == KEPT && !keep_all; j++)
            how = suppressed(&boxes[j], b, iou_num, den, contain_num);
        if (how == BY_IOU)
            add_vote(&r->vote[(j - 1) * IFQ_VOTE_FIELDS], b);
        if (how != KEPT)
            continue;
        if (kept == max_boxes)
            return IFQ_ERR_BUFFER;
        int64_t *acc = &r->vote[kept * IFQ_VOTE_FIELDS];
        for (int f = 0; f < IFQ_VOTE_FIELDS; f++)
            acc[f] = 0;
        add_vote(acc, b);
        boxes[kept++] = *b;
    }
    for (size_t j = 0; j < kept; j++) {   /* the kept boxes' own corners decided the suppression; now vote */
        const int64_t *acc = &r->vote[j * IFQ_VOTE_FIELDS];
        if (acc[4] == 0)   /* every voter scored 0 (conf_q16 0): keep the box */
            continue;
        boxes[j].x1 = vote_mean(acc[0], acc[4]);
        boxes[j].y1 = vote_mean(acc[1], acc[4]);
        boxes[j].x2 = vote_mean(acc[2], acc[4]);
        boxes[j].y2 = vote_mean(acc[3], acc[4]);
    }
    *n_boxes = kept;
    return IFQ_OK;
}
