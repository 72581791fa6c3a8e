"""Integer layer kernels of the engine (numpy only). Feature maps are NHWC.

Integers travel through float32 GEMMs, which are exact whatever the summation order as long
as every product and partial sum is an integer of magnitude below 2**24 (FLOAT32_EXACT); the
runtime proves that bound per layer at load time and falls back to int64 otherwise.

Winograd F(2x2, 3x3) (Lavin & Gray 2016) serves the 3x3 stride-1 binary layers: with the
filter transform scaled by 2 per axis, every transformed value is a small integer, so the
algorithm is exact here and needs 16 instead of 36 multiplies per 2x2 output tile.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

FLOAT32_EXACT = 1 << 24     # integers below this magnitude add and multiply exactly in float32
INT8_MAX = 127
MIN_CONTIGUOUS_RUN = 16     # im2col copies kx*C-value runs when at least this long, else strided rows
CODE_BITS = 2               # activation codes 0..3
CODES_PER_BYTE = 8 // CODE_BITS
CODE_MASK = (1 << CODE_BITS) - 1

# Winograd F(2x2, 3x3): B^T = [[1,0,-1,0],[0,1,1,0],[0,-1,1,0],[0,1,0,-1]] is applied by hand
# below; WINO_G2 = 2 * G keeps the filter transform integral; WINO_AA = A^T (x) A^T maps the 16
# transformed products of a tile to its 2x2 outputs
WINO_G2 = np.array([[2, 0, 0], [1, 1, 1], [1, -1, 1], [0, 0, 2]], dtype=np.int64)
WINO_AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=np.float32)
WINO_AA = np.kron(WINO_AT, WINO_AT)   # (4, 16): row 2u+v gives output (u, v)
WINO_GAIN = 4               # outputs come out multiplied by 2 * 2 (WINO_G2 on both axes)
WINO_TILE = 2               # output tile side


def winograd_bound(in_ch: int, in_max: int, w_max: int) -> int:
    """Largest |value| inside Winograd F(2x2,3x3) (GEMM partial sums, 4x outputs); the input
    transform, held in int8, must also fit: 4 * in_max <= 127, else the bound is infinite."""
    v_max = 4 * in_max                    # B^T d B: at most 2 x 2 inputs with signs +-1
    if v_max > INT8_MAX:
        return FLOAT32_EXACT
    u_max = 9 * w_max                     # G2 g G2^T: row sums of |G2| are at most 3
    return 9 * in_ch * v_max * u_max      # A^T M A adds at most 3 x 3 GEMM outputs


def winograd_filters(w: np.ndarray) -> np.ndarray:
    """int8 (O, I, 3, 3) -> exact integer transform 4 * G g G^T as float32 (16, I, O)."""
    u = np.einsum('ak,oikl,bl->abio', WINO_G2, w.astype(np.int64), WINO_G2)   # (4, 4, I, O)
    return u.reshape(16, w.shape[1], w.shape[0]).astype(np.float32)


def im2col_gemm(x: np.ndarray, wt: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """uint8 (B, H, W, C) -> accumulators (O, B, Ho, Wo) of a 'same'-padded conv; wt: (O, k*k*C)
    float32 (exact within FLOAT32_EXACT) or int64, columns ordered (ky, kx, c).

    Channel-major output: the thresholds then run along long contiguous rows (faster for small O).
    """
    b, h, w, c = x.shape
    p = kernel // 2
    ho, wo = (h + 2 * p - kernel) // stride + 1, (w + 2 * p - kernel) // stride + 1
    xp = np.zeros((b, h + 2 * p, w + 2 * p, c), dtype=np.uint8)
    xp[:, p:p + h, p:p + w] = x
    sb, sh, sw, sc = xp.strides
    if kernel * c >= MIN_CONTIGUOUS_RUN:
        # rows (B, Ho, Wo) x columns (ky, kx*C): copies runs of kx*C contiguous values
        view = as_strided(xp, (b, ho, wo, kernel, kernel * c), (sb, stride * sh, stride * sw, sh, sc))
        cols = np.empty((b * ho * wo, kernel * kernel * c), dtype=wt.dtype)   # (B*Ho*Wo, k*k*C)
        cols.reshape(view.shape)[...] = view
        acc = wt @ cols.T
    else:
        # few channels (the image): rows (ky, kx, c) x columns (B, Ho, Wo) copy long strided runs
        view = as_strided(xp, (kernel, kernel, c, b, ho, wo), (sh, sw, sc, sb, stride * sh, stride * sw))
        cols = np.empty((kernel * kernel * c, b * ho * wo), dtype=wt.dtype)   # (k*k*C, B*Ho*Wo)
        cols.reshape(view.shape)[...] = view
        acc = wt @ cols
    return acc.reshape(wt.shape[0], b, ho, wo)                             # (O, B, Ho, Wo)


def winograd_conv3x3(x: np.ndarray, u: np.ndarray) -> np.ndarray:
    """uint8 (B, H, W, C), filters float32 (16, C, O) -> float32 Y (4, B, ceil(H/2), ceil(W/2), O)
    with Y[2u+v, b, i, j] = WINO_GAIN * acc[b, 2i+u, 2j+v] (3x3 conv, stride 1, zero pad 1)."""
    b, h, w, c = x.shape
    th, tw = -(-h // WINO_TILE), -(-w // WINO_TILE)
    # B^T d B in int8: codes 0..3 give |values| <= 12 (winograd_bound), a quarter of the traffic
    xp = np.zeros((b, 2 * th + 2, 2 * tw + 2, c), dtype=np.int8)
    xp[:, 1:h + 1, 1:w + 1] = x
    rows = [xp[:, a:a + 2 * th:2] for a in range(4)]                      # 4 x (B, th, 2tw+2, C)
    t_rows = (rows[0] - rows[2], rows[1] + rows[2], rows[2] - rows[1], rows[1] - rows[3])
    v = np.empty((16, b, th, tw, c), dtype=np.int8)                        # B^T d B per tile
    for a, t in enumerate(t_rows):
        cols = [t[:, :, k:k + 2 * tw:2] for k in range(4)]                # 4 x (B, th, tw, C)
        np.subtract(cols[0], cols[2], out=v[4 * a])
        np.add(cols[1], cols[2], out=v[4 * a + 1])
        np.subtract(cols[2], cols[1], out=v[4 * a + 2])
        np.subtract(cols[1], cols[3], out=v[4 * a + 3])
    m = np.matmul(v.reshape(16, b * th * tw, c).astype(np.float32), u)    # (16, N, O)
    return (WINO_AA @ m.reshape(16, -1)).reshape(4, b, th, tw, u.shape[2])   # A^T M A


def interleave_tiles(tiles: np.ndarray, h: int, w: int) -> np.ndarray:
    """(4, B, th, tw, O), tile 2u+v holding outputs (2i+u, 2j+v) -> (B, h, w, O), cropped."""
    _, b, th, tw, o = tiles.shape
    out = tiles.reshape(2, 2, b, th, tw, o).transpose(2, 3, 0, 4, 1, 5)   # (B, th, 2, tw, 2, O)
    return out.reshape(b, 2 * th, 2 * tw, o)[:, :h, :w]                   # (B, h, w, O), a copy


def maxpool2(acc: np.ndarray) -> np.ndarray:
    """(O, B, H, W) -> (O, B, H//2, W//2): 2x2 stride-2 max-pool, odd last row/column dropped."""
    o, b, h, w = acc.shape
    a = acc[:, :, :h // 2 * 2, :w // 2 * 2].reshape(o, b, h // 2, 2, w // 2, 2)   # (O, B, H/2, 2, W/2, 2)
    return a.max(axis=(3, 5))


def upsample2(codes: np.ndarray) -> np.ndarray:
    """uint8 (B, H, W, C) -> (B, 2H, 2W, C): nearest neighbour, each value repeated 2x2."""
    return codes.repeat(2, axis=1).repeat(2, axis=2)


def threshold_codes(acc: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """acc, thresholds (3, ...) broadcasting against it, same dtype -> uint8 codes #{k : acc > thresholds[k]}."""
    codes = (acc > thresholds[0]).view(np.uint8)
    for t in thresholds[1:]:
        codes += acc > t
    return codes


def pack_codes(codes: np.ndarray) -> np.ndarray:
    """uint8 codes (B, H, W, C) -> uint8 (B, H, W, ceil(C/4)): code of channel 4j+i in bits 2i..2i+1."""
    b, h, w, c = codes.shape
    padded = np.zeros((b, h, w, -(-c // CODES_PER_BYTE) * CODES_PER_BYTE), dtype=np.uint8)
    padded[..., :c] = codes
    q = padded.reshape(b, h, w, -1, CODES_PER_BYTE)                        # (B, H, W, C/4, 4)
    out = q[..., 0].copy()
    for i in range(1, CODES_PER_BYTE):
        out |= q[..., i] << (CODE_BITS * i)
    return out


def unpack_codes(packed: np.ndarray, channels: int) -> np.ndarray:
    """Inverse of pack_codes: uint8 (B, H, W, ceil(C/4)) -> uint8 codes (B, H, W, C)."""
    shifts = np.arange(0, 8, CODE_BITS, dtype=np.uint8)
    q = (packed[..., None] >> shifts) & CODE_MASK                          # (B, H, W, C/4, 4)
    return q.reshape(*packed.shape[:3], -1)[..., :channels]
