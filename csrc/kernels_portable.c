/* kernels_portable.c: the reference kernel set in plain C99; every other set must equal it. */
#include "ifq_scalar.h"

#define IFQ_KERNEL_SET ifq_kernels_portable
#define IFQ_KERNEL_ID IFQ_KERNELS_PORTABLE
#include "ifq_rows.h"
