/* ifq_vote_check: run ifq_nms_vote on each case file named on the command line and print one line
 * per case: "<status> <kept> <index>... <x1> <y1> <x2> <y2>..." (coordinates as C99 hex floats,
 * exact). A case file holds int32 iou_num, den, contain_num, uint32 n, then n x 4 doubles (boxes),
 * n ranks and n weights, little-endian as this machine writes them. The test suite builds it with
 * AddressSanitizer + UndefinedBehaviorSanitizer; every buffer has exactly the size the API asks
 * for, so any access past one is caught, and compares the lines with engine/nms.py.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ifq.h"
#include "read_file.h"

#define HEADER_BYTES 16

static void check_case(const uint8_t *data, size_t size)
{
    int32_t iou_num, den, contain_num;
    uint32_t n;
    if (size < HEADER_BYTES) {
        puts("-1 short file");
        return;
    }
    memcpy(&iou_num, data, 4);
    memcpy(&den, data + 4, 4);
    memcpy(&contain_num, data + 8, 4);
    memcpy(&n, data + 12, 4);
    if (size != HEADER_BYTES + (size_t)n * 6 * sizeof(double)) {
        puts("-1 size does not match n");
        return;
    }
    double *boxes = malloc((size_t)n * 4 * sizeof(double) + 1), *ranks = malloc((size_t)n * sizeof(double) + 1);
    double *weights = malloc((size_t)n * sizeof(double) + 1), *voted = malloc((size_t)n * 4 * sizeof(double) + 1);
    int64_t *keep = malloc((size_t)n * sizeof(int64_t) + 1);
    void *work = malloc(ifq_nms_vote_work_bytes(n) + 1);
    size_t kept = 0;
    if (boxes && ranks && weights && voted && keep && work) {
        memcpy(boxes, data + HEADER_BYTES, (size_t)n * 4 * sizeof(double));
        memcpy(ranks, data + HEADER_BYTES + (size_t)n * 4 * sizeof(double), (size_t)n * sizeof(double));
        memcpy(weights, data + HEADER_BYTES + (size_t)n * 5 * sizeof(double), (size_t)n * sizeof(double));
        ifq_status st = ifq_nms_vote(boxes, ranks, weights, n, iou_num, den, contain_num, work, keep, voted, &kept);
        printf("%d %zu", (int)st, st == IFQ_OK ? kept : 0);
        for (size_t k = 0; st == IFQ_OK && k < kept; k++)
            printf(" %lld", (long long)keep[k]);
        for (size_t k = 0; st == IFQ_OK && k < 4 * kept; k++)
            printf(" %a", voted[k]);
        putchar('\n');
    } else {
        puts("-1 out of memory");
    }
    free(boxes);
    free(ranks);
    free(weights);
    free(voted);
    free(keep);
    free(work);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        size_t size = 0;
        uint8_t *data = read_file(argv[i], &size);
        if (!data) {
            printf("-1 cannot read %s\n", argv[i]);
            continue;
        }
        check_case(data, size);
        free(data);
    }
    return 0;
}
