/* detect: faces in a binary PPM (P6) image, printed as one JSON line (docs/JSON_OUTPUT.md).
 *
 *     ./detect MODEL.ifq IMAGE.ppm [CONF [NMS [SIZE]]]      defaults 0.7, 0.45, the model's size
 *
 * The letterbox is this program's own: the image is scaled by SIZE / max(width, height) to
 * round(width * scale) x round(height * scale) with bilinear interpolation at pixel centres
 * (the convention of OpenCV's INTER_LINEAR, in double precision, so a pixel may differ by one
 * level from the Python path's cv2.resize), centred on a black canvas whose sides are those
 * rounded up to multiples of the model's stride (SIZE on the longer side). An image
 * that is already SIZE pixels on its longer side is copied unchanged, so its faces equal the
 * Python detector's exactly. Canvas rows are made on demand (ifq_run_rows): the canvas is
 * never held whole, only the line buffers of the runtime are. A model of several heads (a
 * version-2 layer graph) runs the same way: the head buffer holds all heads, one decode + NMS
 * takes them all.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ifq.h"

typedef struct {
    int w, h;
    uint8_t *rgb;            /* PPM order: R, G, B */
    int canvas_w, canvas_h, new_w, new_h, pad_x, pad_y;
    double scale;
} image;

static int die(const char *what, const char *detail)
{
    fprintf(stderr, "error: %s: %s\n", what, detail);
    return 1;
}

static uint8_t *read_all(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *data = NULL;
    long len = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (len >= 0 && fseek(f, 0, SEEK_SET) == 0 && (data = malloc(len ? (size_t)len : 1)) &&
        fread(data, 1, (size_t)len, f) != (size_t)len) {
        free(data);
        data = NULL;
    }
    fclose(f);
    *n = (size_t)len;
    return data;
}

/* Next header number of a PPM after whitespace and # comments; -1 if malformed. */
static long ppm_number(const uint8_t *d, size_t n, size_t *pos)
{
    for (;;) {
        while (*pos < n && strchr(" \t\r\n", d[*pos]))
            (*pos)++;
        if (*pos < n && d[*pos] == '#') {
            while (*pos < n && d[*pos] != '\n')
                (*pos)++;
            continue;
        }
        break;
    }
    long v = 0;
    size_t start = *pos;
    while (*pos < n && d[*pos] >= '0' && d[*pos] <= '9' && v < 100000)
        v = v * 10 + (d[(*pos)++] - '0');
    return *pos > start && v < 100000 ? v : -1;
}

/* Binary PPM, maxval 255: 0 and the pixels, or a message. */
static const char *read_ppm(const char *path, image *im)
{
    size_t n, pos = 2;
    uint8_t *d = read_all(path, &n);
    if (!d)
        return "cannot read the file";
    if (n < 2 || d[0] != 'P' || d[1] != '6') {
        free(d);
        return "not a binary PPM (P6) image";
    }
    long w = ppm_number(d, n, &pos), h = ppm_number(d, n, &pos), maxval = ppm_number(d, n, &pos);
    if (w <= 0 || h <= 0 || maxval != 255 || pos >= n || !strchr(" \t\r\n", d[pos])) {
        free(d);
        return "malformed PPM header (only 8-bit P6 is read)";
    }
    pos++;   /* the single whitespace byte before the pixels */
    if (n - pos < (size_t)w * (size_t)h * 3) {
        free(d);
        return "truncated PPM pixel data";
    }
    im->w = (int)w;
    im->h = (int)h;
    im->rgb = malloc((size_t)w * h * 3);
    if (im->rgb)
        memcpy(im->rgb, d + pos, (size_t)w * h * 3);
    free(d);
    return im->rgb ? NULL : "out of memory";
}

/* engine/preprocess.py letterbox_geometry: the scaled image and the canvas around it (sides
 * rounded up to multiples of `stride`), the image centred. */
static void plan_letterbox(image *im, int size, int stride)
{
    im->scale = (double)size / (im->w > im->h ? im->w : im->h);
    im->new_w = (int)lround(im->w * im->scale);
    im->new_h = (int)lround(im->h * im->scale);
    im->new_w = im->new_w < 1 ? 1 : im->new_w > size ? size : im->new_w;
    im->new_h = im->new_h < 1 ? 1 : im->new_h > size ? size : im->new_h;
    im->canvas_w = (im->new_w + stride - 1) / stride * stride;
    im->canvas_h = (im->new_h + stride - 1) / stride * stride;
    im->pad_x = (im->canvas_w - im->new_w) / 2;
    im->pad_y = (im->canvas_h - im->new_h) / 2;
}

/* Source coordinate of destination pixel i (pixel centres), clamped, as index + fraction. */
static void source_at(int i, int src_len, int dst_len, int *i0, double *frac)
{
    double s = (i + 0.5) * src_len / dst_len - 0.5;
    s = s < 0 ? 0 : s > src_len - 1 ? src_len - 1 : s;
    *i0 = (int)s;
    *frac = s - *i0;
}

/* Canvas row y, BGR: black outside the image, bilinear inside (a copy when no resize is needed). */
static void canvas_row(void *user, int y, uint8_t *row)
{
    const image *im = user;
    memset(row, 0, (size_t)im->canvas_w * 3);
    int yy = y - im->pad_y;
    if (yy < 0 || yy >= im->new_h)
        return;
    int same = im->new_w == im->w && im->new_h == im->h;
    int y0;
    double fy;
    source_at(yy, im->h, im->new_h, &y0, &fy);
    int y1 = y0 + 1 < im->h ? y0 + 1 : y0;
    for (int xx = 0; xx < im->new_w; xx++) {
        uint8_t *out = row + (size_t)(xx + im->pad_x) * 3;
        int x0;
        double fx;
        source_at(xx, im->w, im->new_w, &x0, &fx);
        int x1 = x0 + 1 < im->w ? x0 + 1 : x0;
        for (int c = 0; c < 3; c++) {
            const int rgb = 2 - c;   /* canvas channel c (B, G, R) from PPM channel 2 - c */
            if (same) {
                out[c] = im->rgb[((size_t)yy * im->w + xx) * 3 + rgb];
                continue;
            }
            double top = im->rgb[((size_t)y0 * im->w + x0) * 3 + rgb] * (1 - fx) +
                         im->rgb[((size_t)y0 * im->w + x1) * 3 + rgb] * fx;
            double bottom = im->rgb[((size_t)y1 * im->w + x0) * 3 + rgb] * (1 - fx) +
                            im->rgb[((size_t)y1 * im->w + x1) * 3 + rgb] * fx;
            out[c] = (uint8_t)lround(top * (1 - fy) + bottom * fy);
        }
    }
}

static double clip(double v, double hi) { return v < 0 ? 0 : v > hi ? hi : v; }

int main(int argc, char **argv)
{
    if (argc < 3 || argc > 6) {
        fprintf(stderr, "usage: %s MODEL.ifq IMAGE.ppm [CONF [NMS [SIZE]]]\n", argv[0]);
        return 2;
    }
    double conf = argc > 3 ? atof(argv[3]) : 0.7, nms = argc > 4 ? atof(argv[4]) : 0.45;
    size_t n;
    uint8_t *bytes = read_all(argv[1], &n);
    if (!bytes)
        return die(argv[1], "cannot read the model file");
    ifq_model *model;
    ifq_error err;
    ifq_status st = ifq_model_load(bytes, n, &model, &err);
    free(bytes);
    if (st != IFQ_OK)
        return die(argv[1], err.message);
    int size = argc > 5 ? atoi(argv[5]) : ifq_model_input_size(model);
    image im = {0};
    const char *bad = read_ppm(argv[2], &im);
    if (bad) {
        ifq_model_free(model);
        return die(argv[2], bad);
    }
    ifq_runner *runner;
    if (size <= 0 || size % ifq_model_stride(model)) {
        free(im.rgb);
        ifq_model_free(model);
        return die("size", "input size must be a positive multiple of the model's stride");
    }
    plan_letterbox(&im, size, ifq_model_stride(model));
    if (ifq_runner_create(model, im.canvas_w, im.canvas_h, IFQ_KERNELS_AUTO, &runner, &err) != IFQ_OK) {
        free(im.rgb);
        ifq_model_free(model);
        return die("size", err.message);
    }
    int32_t *head = malloc(ifq_runner_head_len(runner) * sizeof *head);
    ifq_box *boxes = malloc(ifq_runner_max_boxes(runner) * sizeof *boxes);
    size_t found = 0;
    int ok = head && boxes && ifq_run_rows(runner, canvas_row, &im, head) == IFQ_OK &&
             ifq_decode(runner, head, (int32_t)lround(conf * 65536), (int32_t)lround(nms * 1000), 1000, -1,
                        boxes, ifq_runner_max_boxes(runner), &found) == IFQ_OK;
    if (ok) {
        printf("{\"image\": \"%s\", \"width\": %d, \"height\": %d, \"faces\": [", argv[2], im.w, im.h);
        for (size_t i = 0; i < found; i++) {
            const double px = 1.0 / (1 << IFQ_BOX_FRAC_BITS);
            double x1 = clip((boxes[i].x1 * px - im.pad_x) / im.scale, im.w);
            double y1 = clip((boxes[i].y1 * px - im.pad_y) / im.scale, im.h);
            double x2 = clip((boxes[i].x2 * px - im.pad_x) / im.scale, im.w);
            double y2 = clip((boxes[i].y2 * px - im.pad_y) / im.scale, im.h);
            printf("%s{\"x\": %.2f, \"y\": %.2f, \"w\": %.2f, \"h\": %.2f, \"score\": %.4f}", i ? ", " : "",
                   x1, y1, x2 - x1, y2 - y1, boxes[i].score / (double)(1 << IFQ_SCORE_FRAC_BITS));
        }
        printf("]}\n");
    }
    free(head);
    free(boxes);
    free(im.rgb);
    ifq_runner_free(runner);
    ifq_model_free(model);
    return ok ? 0 : die(argv[2], "out of memory");
}
