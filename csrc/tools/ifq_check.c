/* ifq_check: load each .ifq file named on the command line and, if it loads, run and decode it
 * once (then once per head alone, for a model of several heads: ifq_runner_create_heads); print
 * one line per file: "<status> <boxes of the first run> <message>". The test suite builds it with
 * AddressSanitizer + UndefinedBehaviorSanitizer and feeds it damaged files: each file is read
 * into a buffer of exactly its size, so any read past the end is caught.
 */
#include <stdio.h>
#include <stdlib.h>

#include "ifq.h"
#include "read_file.h"

#define MAX_RUN_SIZE 256   /* run models at their input size up to this side, else at one stride */

/* Run the heads in `heads` once on a fixed pseudo-random canvas, decode; the number of boxes or -1. */
static long run_once(const ifq_model *m, uint64_t heads)
{
    int size = ifq_model_input_size(m) <= MAX_RUN_SIZE ? ifq_model_input_size(m) : ifq_model_stride(m);
    ifq_runner *r;
    ifq_error err;
    if (ifq_runner_create_heads(m, size, size, IFQ_KERNELS_AUTO, heads, &r, &err) != IFQ_OK)
        return -1;
    uint8_t *canvas = malloc((size_t)size * size * 3);
    int32_t *head = malloc(ifq_runner_head_len(r) * sizeof *head);
    ifq_box *boxes = malloc(ifq_runner_max_boxes(r) * sizeof *boxes);
    size_t n = 0;
    long out = -1;
    if (canvas && head && boxes) {
        uint32_t x = 12345;
        for (size_t i = 0; i < (size_t)size * size * 3; i++) {
            x = x * 1664525u + 1013904223u;
            canvas[i] = (uint8_t)(x >> 24);
        }
        if (ifq_run(r, canvas, head) == IFQ_OK &&
            ifq_decode(r, head, 6554, 500, 1000, -1, boxes, ifq_runner_max_boxes(r), &n) == IFQ_OK)
            out = (long)n;
    }
    free(canvas);
    free(head);
    free(boxes);
    ifq_runner_free(r);
    return out;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        size_t size = 0;
        uint8_t *data = read_file(argv[i], &size);
        if (!data) {
            printf("-1 -1 cannot read %s\n", argv[i]);
            continue;
        }
        ifq_model *m;
        ifq_error err;
        ifq_status st = ifq_model_load(data, size, &m, &err);
        free(data);   /* the model keeps no pointer into the file */
        if (st != IFQ_OK) {
            printf("%d -1 %s\n", (int)st, err.message);
            continue;
        }
        printf("0 %ld ok\n", run_once(m, IFQ_ALL_HEADS));
        for (int h = 0; h < ifq_model_num_heads(m) && ifq_model_num_heads(m) > 1 && h < 64; h++)
            run_once(m, (uint64_t)1 << h);
        ifq_model_free(m);
    }
    return 0;
}
