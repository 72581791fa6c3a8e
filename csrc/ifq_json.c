/* ifq_json.c: is the metadata block UTF-8 text holding one JSON object, as Python's strict
 * `bytes.decode('utf-8')` then `json.loads` would accept it? The runtime never uses the
 * metadata; it checks it only so that the C and Python readers refuse the same files.
 *
 * Python's json accepts NaN, Infinity and -Infinity, any \uXXXX escape (lone surrogates too)
 * and no control character inside strings. Nesting is limited to MAX_DEPTH here; Python's
 * limit is its recursion limit (about 1000): files nested between the two are the one
 * documented difference (docs/NATIVE.md).
 */
#include <string.h>

#include "ifq_internal.h"

#define MAX_DEPTH 512

typedef struct {
    const uint8_t *p, *end;
} cursor;

/* Strict UTF-8: no overlong forms, no surrogates, nothing above U+10FFFF. */
static int utf8_ok(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t lo = 0x80, hi = 0xBF;   /* allowed range of the second byte */
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xC2 && c <= 0xDF) {
            len = 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            len = 3;
            lo = c == 0xE0 ? 0xA0 : 0x80;
            hi = c == 0xED ? 0x9F : 0xBF;
        } else if (c >= 0xF0 && c <= 0xF4) {
            len = 4;
            lo = c == 0xF0 ? 0x90 : 0x80;
            hi = c == 0xF4 ? 0x8F : 0xBF;
        } else {
            return 0;
        }
        if (n - i < len || s[i + 1] < lo || s[i + 1] > hi)
            return 0;
        for (size_t k = 2; k < len; k++)
            if ((s[i + k] & 0xC0) != 0x80)
                return 0;
        i += len;
    }
    return 1;
}

static void skip_space(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int literal(cursor *c, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0)
        return 0;
    c->p += n;
    return 1;
}

static int is_digit(cursor *c) { return c->p < c->end && *c->p >= '0' && *c->p <= '9'; }

static int is_hex(uint8_t h)
{
    return (h >= '0' && h <= '9') || (h >= 'a' && h <= 'f') || (h >= 'A' && h <= 'F');
}

static int string(cursor *c)   /* at the opening quote */
{
    c->p++;
    while (c->p < c->end) {
        uint8_t ch = *c->p++;
        if (ch == '"')
            return 1;
        if (ch < 0x20)
            return 0;
        if (ch == '\\') {
            if (c->p >= c->end)
                return 0;
            uint8_t e = *c->p++;
            if (e == 'u') {
                if (c->end - c->p < 4)
                    return 0;
                for (int k = 0; k < 4; k++)
                    if (!is_hex(c->p[k]))
                        return 0;
                c->p += 4;
            } else if (!strchr("\"\\/bfnrt", e) || e == 0) {
                return 0;
            }
        }
    }
    return 0;
}

/* -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][-+]?[0-9]+)?, and -Infinity */
static int number(cursor *c)
{
    if (*c->p == '-') {
        c->p++;
        if (literal(c, "Infinity"))
            return 1;
    }
    if (!is_digit(c))
        return 0;
    if (*c->p++ != '0')
        while (is_digit(c))
            c->p++;
    if (c->p + 1 < c->end && *c->p == '.' && c->p[1] >= '0' && c->p[1] <= '9') {
        c->p++;
        while (is_digit(c))
            c->p++;
    }
    if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
        const uint8_t *mark = c->p++;
        if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
            c->p++;
        if (!is_digit(c)) {
            c->p = mark;   /* "1e" is the number 1 followed by junk, as Python's scanner reads it */
            return 1;
        }
        while (is_digit(c))
            c->p++;
    }
    return 1;
}

static int value(cursor *c, int depth);

/* An object or array after its opening bracket: members separated by commas, no trailing one. */
static int container(cursor *c, int depth, int object)
{
    uint8_t close = object ? '}' : ']';
    c->p++;
    skip_space(c);
    if (c->p < c->end && *c->p == close) {
        c->p++;
        return 1;
    }
    for (;;) {
        skip_space(c);
        if (object) {
            if (c->p >= c->end || *c->p != '"' || !string(c))
                return 0;
            skip_space(c);
            if (c->p >= c->end || *c->p++ != ':')
                return 0;
            skip_space(c);
        }
        if (!value(c, depth + 1))
            return 0;
        skip_space(c);
        if (c->p >= c->end)
            return 0;
        uint8_t ch = *c->p++;
        if (ch == close)
            return 1;
        if (ch != ',')
            return 0;
    }
}

static int value(cursor *c, int depth)
{
    if (c->p >= c->end || depth > MAX_DEPTH)
        return 0;
    switch (*c->p) {
    case '{': return container(c, depth, 1);
    case '[': return container(c, depth, 0);
    case '"': return string(c);
    case 't': return literal(c, "true");
    case 'f': return literal(c, "false");
    case 'n': return literal(c, "null");
    case 'N': return literal(c, "NaN");
    case 'I': return literal(c, "Infinity");
    default: return number(c);
    }
}

int ifq_json_object_ok(const uint8_t *text, size_t n)
{
    if (!utf8_ok(text, n))
        return 0;
    cursor c = {text, text + n};
    skip_space(&c);
    if (c.p >= c.end || *c.p != '{' || !value(&c, 0))
        return 0;
    skip_space(&c);
    return c.p == c.end;
}
