/* ifq_sort.c: heapsort of candidate indices by a rank order, for both NMS (ifq_decode.c's
 * int64 keys, ifq_vote.c's double ranks): no allocation, O(n log n). */
#include "ifq_internal.h"

static void sift(const void *keys, ifq_before_fn before, uint32_t *v, size_t i, size_t n)
{
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n)
            return;
        if (child + 1 < n && before(keys, v[child], v[child + 1]))
            child++;
        if (!before(keys, v[i], v[child]))
            return;
        uint32_t t = v[i];
        v[i] = v[child];
        v[child] = t;
        i = child;
    }
}

void ifq_sort_indices(const void *keys, ifq_before_fn before, uint32_t *v, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift(keys, before, v, i, n);   /* a heap whose root ranks last */
    for (size_t end = n; end > 1; end--) {
        uint32_t t = v[0];
        v[0] = v[end - 1];
        v[end - 1] = t;
        sift(keys, before, v, 0, end - 1);
    }
}
