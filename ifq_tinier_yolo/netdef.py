"""THE network description: layer table, input size, anchors, grid, quantizer constants.

Training (`model`), conversion (`integrate`) and the integer engine (`engine`) all build
from this one table, darknet-cfg style. Nothing else in the package knows widths, strides,
anchors or the input size. numpy-free and torch-free so that every stage can import it.
"""
from __future__ import annotations

from dataclasses import dataclass

# --- HWGQ 2-bit activation quantizer (Cai et al., HWGQ-Net; PAPER.md) -----------------
ACT_BITS = 2
HWGQ_STEP = 0.538                 # Delta: value of code q is q * HWGQ_STEP
HWGQ_CUTS = (0.0, 0.807, 1.345)   # code = #{k : x > HWGQ_CUTS[k]} (any x > 0 gives code >= 1)
HWGQ_CLIP = 3 * HWGQ_STEP         # backward: ReLU gradient, zeroed above this
HWGQ_LEVELS = (1 << ACT_BITS) - 1  # largest code, 3

# --- fixed-point first layer and head ---------------------------------------------------
FIXED_WEIGHT_BITS = 8             # first layer and head weights: symmetric int8, [-127, 127]
FIXED_WEIGHT_MAX = (1 << (FIXED_WEIGHT_BITS - 1)) - 1
PIXEL_MAX = 255                   # the first layer reads the uint8 image; value = pixel / 255
LETTERBOX_FILL = 0                # letterbox padding pixel value (same as the conv zero padding)

# --- YOLOv2 region layer ------------------------------------------------------------------
VALUES_PER_ANCHOR = 5             # tx, ty, tw, th, objectness (one class: face)
X_FIELD, Y_FIELD, W_FIELD, H_FIELD, OBJECTNESS_FIELD = range(VALUES_PER_ANCHOR)
# Anchors (w, h) in grid cells at stride 16, IoU k-means on WIDER train faces >= 6 px at
# 416 input (scripts/fit_anchors.py reproduces them).
ANCHORS: tuple[tuple[float, float], ...] = (
    (0.447, 0.569), (0.569, 0.731), (0.853, 1.056), (1.381, 1.747), (3.006, 4.062))



def head_channel(anchor: int, field: int) -> int:
    """Channel of the head output holding `field` of `anchor`: channels are (A, 5) row-major."""
    return anchor * VALUES_PER_ANCHOR + field


INPUT_SIZE = 416                  # default square network input in pixels (letterboxed)


@dataclass(frozen=True)
class LayerSpec:
    """One row of the layer table."""
    name: str
    kind: str        # 'first' (int8 weights on the uint8 image), 'hidden' (binary), 'head' (int8)
    out_ch: int      # output channels
    kernel: int      # square kernel size, 'same' zero padding
    stride: int      # convolution stride
    pool: int = 0    # 0 or 2: 2x2/2 max-pool after the conv (conv -> pool -> BN -> HWGQ)

    @property
    def weight_bits(self) -> int:
        """Bits per stored weight: 1 for binary hidden layers, 8 for first and head."""
        return 1 if self.kind == 'hidden' else FIXED_WEIGHT_BITS


# The Tinier-YOLO layer table: a slim Tiny-YOLOv2 trunk with a 26x26 grid at 416 input.
# Strided early convolutions keep the full-resolution layers cheap (they dominate compute).
LAYERS: tuple[LayerSpec, ...] = (
    LayerSpec('conv1', 'first', 16, 3, 2),            # 416 -> 208
    LayerSpec('conv2', 'hidden', 32, 3, 2),           # 208 -> 104
    LayerSpec('conv3', 'hidden', 64, 3, 2),           # 104 -> 52
    LayerSpec('conv4', 'hidden', 96, 3, 1, pool=2),   # 52 -> 26
    LayerSpec('conv5', 'hidden', 192, 3, 1),          # 26
    LayerSpec('conv6', 'hidden', 256, 3, 1),          # 26
    LayerSpec('head', 'head', len(ANCHORS) * VALUES_PER_ANCHOR, 1, 1),
)
IN_CHANNELS = 3                   # BGR image


def total_stride(layers: tuple[LayerSpec, ...] = LAYERS) -> int:
    """Input pixels per grid cell."""
    s = 1
    for layer in layers:
        s *= layer.stride * (layer.pool or 1)
    return s


def grid_size(img_size: int, layers: tuple[LayerSpec, ...] = LAYERS) -> int:
    """Grid cells per side for a square input of `img_size` pixels."""
    return img_size // total_stride(layers)


def in_channels(layers: tuple[LayerSpec, ...] = LAYERS) -> list[int]:
    """Input channels of each layer, derived from the table."""
    chans, c = [], IN_CHANNELS
    for layer in layers:
        chans.append(c)
        c = layer.out_ch
    return chans


def receptive_field(layers: tuple[LayerSpec, ...] = LAYERS) -> int:
    """Input pixels one head output sees (side of its square window)."""
    rf, jump = 1, 1
    for layer in layers:
        rf += (layer.kernel - 1) * jump
        jump *= layer.stride
        if layer.pool:
            rf += (layer.pool - 1) * jump
            jump *= layer.pool
    return rf


# --- image pyramid at inference -----------------------------------------------------------
# The trunk sees receptive_field() = 103 px, so a face much larger than that is only seen in
# parts. Each further pyramid level runs the network at half the previous input side and keeps
# only boxes of at least PYRAMID_MIN_CELLS grid cells: small faces are better seen at full size.
PYRAMID_LEVELS = 2                # default number of input sizes (1: a single pass)
PYRAMID_MIN_CELLS = 2             # smallest box side (longer side, grid cells) kept by levels after the first
# The optional upscaled level (`--upscale`) runs the network at UPSCALE times the input side and
# keeps only boxes of at most UPSCALE_MAX_CELLS cells: small faces get more pixels, while the
# larger ones, seen better at full size, are not repeated with the larger input's false positives.
UPSCALE = 4 / 3
UPSCALE_MAX_CELLS = 3             # largest box side (longer side, grid cells) kept by the upscaled level


def pyramid_sizes(img_size: int, levels: int = PYRAMID_LEVELS,
                  layers: tuple[LayerSpec, ...] = LAYERS) -> list[int]:
    """Input sides of the pyramid levels: img_size, then halved and rounded to the total stride."""
    s = total_stride(layers)
    return [max(s, round(img_size / 2**k / s) * s) for k in range(levels)]


def upscale_size(img_size: int, layers: tuple[LayerSpec, ...] = LAYERS) -> int:
    """Input side of the upscaled level: img_size * UPSCALE rounded to the total stride."""
    s = total_stride(layers)
    return round(img_size * UPSCALE / s) * s


def check_layers(layers: tuple[LayerSpec, ...] = LAYERS,
                 anchors: tuple[tuple[float, float], ...] = ANCHORS) -> None:
    """Check derived numbers of the table; raise ValueError naming the layer."""
    if not layers or layers[0].kind != 'first' or layers[-1].kind != 'head':
        raise ValueError('layer table must start with a first layer and end with a head')
    for layer in layers[1:-1]:
        if layer.kind != 'hidden':
            raise ValueError(f'layer {layer.name}: only hidden layers may sit between first and head')
    for layer in layers:
        if layer.kernel % 2 != 1:
            raise ValueError(f'layer {layer.name}: kernel {layer.kernel} must be odd (same padding)')
        if layer.pool not in (0, 2):
            raise ValueError(f'layer {layer.name}: pool must be 0 or 2, not {layer.pool}')
    head = layers[-1]
    if head.out_ch != len(anchors) * VALUES_PER_ANCHOR:
        raise ValueError(f'layer {head.name}: {head.out_ch} channels, expected '
                         f'{len(anchors)} anchors x {VALUES_PER_ANCHOR} = {len(anchors) * VALUES_PER_ANCHOR}')
    if head.kernel != 1 or head.stride != 1 or head.pool:
        raise ValueError(f'layer {head.name}: the head must be a 1x1 stride-1 conv without pool')


def check_input_size(img_size: int, layers: tuple[LayerSpec, ...] = LAYERS) -> None:
    """Raise ValueError unless `img_size` is a positive multiple of the total stride."""
    s = total_stride(layers)
    if img_size <= 0 or img_size % s:
        raise ValueError(f'input size {img_size} must be a positive multiple of {s}')


check_layers()


def layers_to_list(layers: tuple[LayerSpec, ...] = LAYERS) -> list[dict]:
    """The table as plain data (stored in checkpoints and model files)."""
    return [dict(name=l.name, kind=l.kind, out_ch=l.out_ch, kernel=l.kernel, stride=l.stride,
                 pool=l.pool) for l in layers]


def layers_from_list(rows: list[dict]) -> tuple[LayerSpec, ...]:
    """Inverse of `layers_to_list`; raises ValueError on a malformed table."""
    try:
        layers = tuple(LayerSpec(str(r['name']), str(r['kind']), int(r['out_ch']),
                                 int(r['kernel']), int(r['stride']), int(r['pool'])) for r in rows)
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f'malformed layer table: {e}') from None
    return layers
