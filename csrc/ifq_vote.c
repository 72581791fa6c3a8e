/* ifq_vote.c: greedy NMS with box voting on double boxes, as engine/nms.py nms_vote does it on
 * float boxes (same order, same tests, same sums in the same order), so that the Python Detector's
 * merge of its pyramid levels gives the same boxes, bit for bit, in a fraction of the time.
 * Outside the network: the boxes are in image pixels, after the integer decode. */
#include <math.h>

#include "ifq_internal.h"

/* Rank order: higher rank first, then lower index (nms._greedy's lexsort). */
static int before(const void *ranks, uint32_t a, uint32_t b)
{
    const double *rank = ranks;
    return rank[a] != rank[b] ? rank[a] > rank[b] : a < b;
}

enum { KEPT, BY_IOU, BY_CONTAINMENT };

/* nms._greedy's test of box b (area ab) against the kept box a (area aa), in its operation order. */
static int suppressed(const double *a, double aa, const double *b, double ab, double iou_num, double den,
                      double contain_num, int contain)
{
    double iw = (a[2] < b[2] ? a[2] : b[2]) - (a[0] > b[0] ? a[0] : b[0]);
    double ih = (a[3] < b[3] ? a[3] : b[3]) - (a[1] > b[1] ? a[1] : b[1]);
    double inter = (iw > 0 ? iw : 0) * (ih > 0 ? ih : 0);
    double uni = aa + ab - inter;
    if (inter * den > iou_num * uni)
        return BY_IOU;
    return contain && inter * den > contain_num * ab ? BY_CONTAINMENT : KEPT;
}

size_t ifq_nms_vote_work_bytes(size_t n)
{
    if (n > IFQ_MAX_CANDIDATES)
        return 0;
    return n * (2 * sizeof(double) + sizeof(uint32_t) + sizeof(int32_t));
}

ifq_status ifq_nms_vote(const double *boxes, const double *ranks, const double *weights, size_t n, int32_t iou_num,
                        int32_t den, int32_t contain_num, void *work, int64_t *keep, double *voted, size_t *n_keep)
{
    if (!n_keep || (n && (!boxes || !ranks || !weights || !work || !keep || !voted)) || den <= 0 || iou_num < 0
        || n > IFQ_MAX_CANDIDATES)
        return IFQ_ERR_ARGUMENT;
    for (size_t i = 0; i < n; i++)
        if (isnan(ranks[i]))   /* no order: the lexsort puts NaN last, a comparison cannot */
            return IFQ_ERR_ARGUMENT;
    double *area = work;                          /* n: each box's (x2 - x1) * (y2 - y1) */
    double *total = area + n;                     /* per kept box: sum of its voters' weights */
    uint32_t *order = (uint32_t *)(total + n);   /* n: candidates best first */
    int32_t *owner = (int32_t *)(order + n);     /* per candidate: the kept box it votes for, or -1 */
    for (size_t i = 0; i < n; i++) {
        const double *b = boxes + 4 * i;
        area[i] = (b[2] - b[0]) * (b[3] - b[1]);
        order[i] = (uint32_t)i;
        owner[i] = -1;
    }
    ifq_sort_indices(ranks, before, order, n);
    const int keep_all = iou_num >= den && contain_num < 0;   /* no IoU exceeds 1: nothing is suppressed */
    const int contain = contain_num >= 0;
    size_t kept = 0;
    for (size_t r = 0; r < n; r++) {
        const uint32_t i = order[r];
        int how = KEPT;
        size_t j = 0;
        for (; j < kept && how == KEPT && !keep_all; j++)
            how = suppressed(boxes + 4 * (size_t)keep[j], area[keep[j]], boxes + 4 * (size_t)i, area[i],
                             iou_num, den, contain_num, contain);
        if (how == BY_IOU)
            owner[i] = (int32_t)(j - 1);
        if (how != KEPT)
            continue;
        owner[i] = (int32_t)kept;
        keep[kept++] = i;   /* the kept boxes, best first: the output, and the list tested against */
    }
    /* the votes, summed in candidate order as np.add.at does: products rounded, then added */
    for (size_t k = 0; k < 4 * kept; k++)
        voted[k] = 0.0;
    for (size_t k = 0; k < kept; k++)
        total[k] = 0.0;
    for (size_t i = 0; i < n; i++) {
        if (owner[i] < 0)
            continue;
        const double w = weights[i], *b = boxes + 4 * i;
        double *mass = voted + 4 * (size_t)owner[i];
        total[owner[i]] += w;
        for (int f = 0; f < 4; f++) {
            const double product = w * b[f];
            mass[f] += product;
        }
    }
    for (size_t k = 0; k < kept; k++) {
        const double *b = boxes + 4 * (size_t)keep[k];
        for (int f = 0; f < 4; f++)   /* a total of 0 (or less) keeps the box as it is */
            voted[4 * k + f] = total[k] > 0 ? voted[4 * k + f] / total[k] : b[f];
    }
    *n_keep = kept;
    return IFQ_OK;
}
