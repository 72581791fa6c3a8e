/* read_file: a whole file into a malloc'd buffer (NULL if it cannot be opened or read); shared
 * by the command-line tools. Header-only: each tool is built as one translation unit. */
#ifndef IFQ_TOOLS_READ_FILE_H
#define IFQ_TOOLS_READ_FILE_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    uint8_t *data = NULL;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    if (n >= 0 && fseek(f, 0, SEEK_SET) == 0 && (data = malloc(n ? (size_t)n : 1)) != NULL &&
        fread(data, 1, (size_t)n, f) != (size_t)n) {
        free(data);
        data = NULL;
    }
    fclose(f);
    *size = n >= 0 ? (size_t)n : 0;
    return data;
}

#endif
