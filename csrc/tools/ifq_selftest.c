/* ifq_selftest: is every kernel set this CPU runs bit-exact with the portable one? For porting:
 * build it for the target (it needs only the library) and run it there, or under an emulator.
 *
 *     ifq_selftest MODEL.ifq [WIDTHxHEIGHT | SIDE ...]
 *
 * Canvas sizes default to the model's square one and a 4:3 landscape one of the same width.
 * Runs each set on pseudo-random canvases (and a black and a white one) at each size and
 * compares every head integer with the portable set's; prints one line per set, exits 1 on any
 * difference.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ifq.h"
#include "read_file.h"

#define CANVASES 4

static void fill(uint8_t *canvas, size_t n, int which)
{
    uint32_t x = 2463534242u + (uint32_t)which;
    for (size_t i = 0; i < n; i++) {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        canvas[i] = which == 0 ? 0 : which == 1 ? 255 : (uint8_t)x;
    }
}

/* The head of one canvas on one kernel set; 0 on failure. */
static int head_of(const ifq_model *m, int w, int h, ifq_kernels k, const uint8_t *canvas, int32_t *head)
{
    ifq_runner *r;
    ifq_error err;
    if (ifq_runner_create(m, w, h, k, &r, &err) != IFQ_OK) {
        fprintf(stderr, "%s at %dx%d: %s\n", ifq_kernels_name(k), w, h, err.message);
        return 0;
    }
    int ok = ifq_run(r, canvas, head) == IFQ_OK;
    ifq_runner_free(r);
    return ok;
}

/* Canvas size `which` of the command line (WxH or one side), or of the defaults. */
static void canvas_size(const ifq_model *m, int argc, char **argv, int which, int *w, int *h)
{
    if (argc > 2) {
        if (sscanf(argv[which + 2], "%dx%d", w, h) != 2)
            *h = *w = atoi(argv[which + 2]);
        return;
    }
    int side = ifq_model_input_size(m), stride = ifq_model_stride(m);
    *w = side;
    *h = which ? (side * 3 / 4 + stride - 1) / stride * stride : side;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODEL.ifq [WIDTHxHEIGHT | SIDE ...]\n", argv[0]);
        return 2;
    }
    size_t n;
    uint8_t *bytes = read_file(argv[1], &n);
    ifq_model *m;
    ifq_error err;
    if (!bytes || ifq_model_load(bytes, n, &m, &err) != IFQ_OK) {
        fprintf(stderr, "%s: %s\n", argv[1], bytes ? err.message : "cannot read the file");
        return 1;
    }
    free(bytes);
    int failed = 0;
    for (int k = IFQ_KERNELS_AVX2; k <= IFQ_KERNELS_AMX; k++) {
        if (!ifq_kernels_supported((ifq_kernels)k))
            continue;
        int same = 0, total = 0;
        for (int s = 0; s < (argc > 2 ? argc - 2 : 2); s++) {
            int w, h;
            canvas_size(m, argc, argv, s, &w, &h);
            size_t len = (size_t)(w > 0 ? w : 0) * (size_t)(h > 0 ? h : 0) * 3, head_len = 0;   /* every head, back to back */
            ifq_runner *sizing;
            if (ifq_runner_create(m, w, h, IFQ_KERNELS_PORTABLE, &sizing, &err) == IFQ_OK) {
                head_len = ifq_runner_head_len(sizing);
                ifq_runner_free(sizing);
            }
            uint8_t *canvas = malloc(len);
            int32_t *want = malloc((head_len + 1) * sizeof *want), *got = malloc((head_len + 1) * sizeof *got);
            for (int c = 0; c < CANVASES && canvas && want && got; c++) {
                fill(canvas, len, c);
                total++;
                same += head_of(m, w, h, IFQ_KERNELS_PORTABLE, canvas, want) &&
                        head_of(m, w, h, (ifq_kernels)k, canvas, got) &&
                        memcmp(want, got, head_len * sizeof *got) == 0;
            }
            free(canvas);
            free(want);
            free(got);
        }
        printf("%s: %d/%d heads equal to portable\n", ifq_kernels_name((ifq_kernels)k), same, total);
        failed |= same != total;
    }
    ifq_model_free(m);
    return failed;
}
