"""THE network description: layer table, input size, anchors, grid, quantizer constants.

Training (`model`), conversion (`integrate`) and the integer engine (`engine`) all build
from this one table, darknet-cfg style. Nothing else in the package knows widths, strides,
anchors or the input size. numpy-free and torch-free so that every stage can import it.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace

from .errors import ConfigError

# --- HWGQ 2-bit activation quantizer (Cai et al., HWGQ-Net; PAPER.md) -----------------
ACT_BITS = 2
HWGQ_STEP = 0.538                 # Delta: value of code q is q * HWGQ_STEP
HWGQ_CUTS = (0.0, 0.807, 1.345)   # code = #{k : x > HWGQ_CUTS[k]} (any x > 0 gives code >= 1)
HWGQ_CLIP = 3 * HWGQ_STEP         # backward: ReLU gradient, zeroed above this
HWGQ_LEVELS = (1 << ACT_BITS) - 1  # largest code, 3

# --- fixed-point first layer and head ---------------------------------------------------
FIXED_WEIGHT_BITS = 8             # first layer and head weights: symmetric int8, [-127, 127]
BINARY_WEIGHT_BITS = 1            # hidden layer weights: +-1, one sign bit each in the model file
FIXED_WEIGHT_MAX = (1 << (FIXED_WEIGHT_BITS - 1)) - 1
PIXEL_MAX = 255                   # the first layer reads the uint8 image; value = pixel / 255
LETTERBOX_FILL = 0                # letterbox padding pixel value (same as the conv zero padding)

# --- YOLOv2 region layer ------------------------------------------------------------------
VALUES_PER_ANCHOR = 5             # tx, ty, tw, th, objectness (one class: face)
X_FIELD, Y_FIELD, W_FIELD, H_FIELD, OBJECTNESS_FIELD = range(VALUES_PER_ANCHOR)
EXP_CLAMP = 10.0                  # tw, th are clamped to this before exp (loss and both decoders)
# Anchors (w, h) in grid cells at stride 16, IoU k-means on WIDER train faces >= 6 px at
# 416 input (scripts/fit_anchors.py reproduces them).
ANCHORS: tuple[tuple[float, float], ...] = (
    (0.447, 0.569), (0.569, 0.731), (0.853, 1.056), (1.381, 1.747), (3.006, 4.062))



def head_channel(anchor: int, field: int) -> int:
    """Channel of the head output holding `field` of `anchor`: channels are (A, 5) row-major."""
    return anchor * VALUES_PER_ANCHOR + field


INPUT_SIZE = 416                  # default square network input in pixels (letterboxed)


@dataclass(frozen=True)
class LayerKind:
    """What a kind of layer is. Stages read this record instead of comparing kind names."""
    name: str
    input_max: int        # largest input value: 255 (uint8 pixels) or HWGQ_LEVELS (2-bit codes)
    in_scale: float       # value of one input unit in the float model: 1/PIXEL_MAX (pixels) or HWGQ_STEP (codes)
    weight_bits: int      # bits per stored weight: 8 (int8 bytes), 1 (+-1, packed sign bits), 0 (no weights)
    has_weights: bool     # a convolution (False: a parameter-free rearrangement of its input)
    threshold_bytes: tuple[int, ...] = ()   # widths the model file allows for thresholds, narrowest first; (): none
    reads_image: bool = False   # reads the image (only the table's first row may): float mode scales the pixels
    is_head: bool = False       # gives detection values (int32 acc + bias, anchors, output scale), not codes
    upsamples: bool = False     # repeats each input value UPSAMPLE x UPSAMPLE times: no kernel, stride or pool

    @property
    def has_thresholds(self) -> bool:
        """Ends in BatchNorm + HWGQ codes (a ConvBlock in torch), converted to integer thresholds."""
        return bool(self.threshold_bytes)


KINDS: dict[str, LayerKind] = {k.name: k for k in (
    LayerKind('first', PIXEL_MAX, 1.0 / PIXEL_MAX, FIXED_WEIGHT_BITS, True,   # int8 weights on the uint8 image
              threshold_bytes=(4,), reads_image=True),
    LayerKind('hidden', HWGQ_LEVELS, HWGQ_STEP, BINARY_WEIGHT_BITS, True,     # binary weights on codes
              threshold_bytes=(2, 4)),
    LayerKind('head', HWGQ_LEVELS, HWGQ_STEP, FIXED_WEIGHT_BITS, True,        # int8 weights on codes + int32 bias
              is_head=True),
    LayerKind('upsample', HWGQ_LEVELS, HWGQ_STEP, 0, False, upsamples=True),  # nearest-neighbour 2x of codes
    LayerKind('fixed', HWGQ_LEVELS, HWGQ_STEP, FIXED_WEIGHT_BITS, True,       # int8 weights on codes
              threshold_bytes=(4,)),
)}
UPSAMPLE = 2                      # an upsample layer repeats each input value UPSAMPLE x UPSAMPLE times

Anchors = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class LayerSpec:
    """One row of the layer table."""
    name: str
    kind: str        # a key of KINDS
    out_ch: int      # output channels
    kernel: int = 1  # square kernel size, 'same' zero padding
    stride: int = 1  # convolution stride
    pool: int = 0    # 0 or 2: 2x2/2 max-pool after the conv (conv -> pool -> BN -> HWGQ)
    inputs: tuple[str, ...] = ()   # layers whose outputs are concatenated (channels) as input; (): the row above
    anchors: Anchors = ()          # heads: anchors (w, h) in grid cells of this head

    @property
    def info(self) -> LayerKind:
        """The kind record of this layer (ValueError naming the layer for an unknown kind)."""
        if self.kind not in KINDS:
            raise ValueError(f'layer {self.name}: unknown kind {self.kind!r}')
        return KINDS[self.kind]

    @property
    def weight_bits(self) -> int:
        """Bits per stored weight: 1 for binary hidden layers, 8 for first and head."""
        return self.info.weight_bits


def head_layer(anchors: Anchors, name: str = 'head', inputs: tuple[str, ...] = ()) -> LayerSpec:
    """A YOLOv2 region head: 1x1 conv giving VALUES_PER_ANCHOR values per anchor."""
    return LayerSpec(name, 'head', len(anchors) * VALUES_PER_ANCHOR, 1, 1, inputs=inputs, anchors=tuple(anchors))


# The Tinier-YOLO layer table (v1, the shipped model): a slim Tiny-YOLOv2 trunk with a 26x26
# grid at 416 input. Strided early convolutions keep the full-resolution layers cheap.
LAYERS: tuple[LayerSpec, ...] = (
    LayerSpec('conv1', 'first', 16, 3, 2),            # 416 -> 208
    LayerSpec('conv2', 'hidden', 32, 3, 2),           # 208 -> 104
    LayerSpec('conv3', 'hidden', 64, 3, 2),           # 104 -> 52
    LayerSpec('conv4', 'hidden', 96, 3, 1, pool=2),   # 52 -> 26
    LayerSpec('conv5', 'hidden', 192, 3, 1),          # 26
    LayerSpec('conv6', 'hidden', 256, 3, 1),          # 26
    head_layer(ANCHORS),
)

# v2: the same trunk with a second head at stride 8 (52x52 at 416) for small faces, fed by the
# stride-8 features of conv3 concatenated with the upsampled stride-16 features (FPN-style:
# the fine map gets the context of the deep layers). The anchors are v1's k-means anchors: the
# two smallest (7x9 and 9x12 px) move to the stride-8 head, where a cell is 8 px, the other three
# stay at stride 16 (so a v1 model initialises head16, see train.transplant).
ANCHORS_S16: Anchors = ANCHORS[2:]
ANCHORS_S8: Anchors = tuple((2 * w, 2 * h) for w, h in ANCHORS[:2])
LAYERS_V2: tuple[LayerSpec, ...] = (
    *LAYERS[:-1],
    head_layer(ANCHORS_S16, 'head16'),                              # 26x26, faces of about 20 px and up
    LayerSpec('lat6', 'hidden', 64, 1, 1, inputs=('conv6',)),       # 26, fewer channels to carry up
    LayerSpec('up6', 'upsample', 64),                               # 26 -> 52
    LayerSpec('conv7', 'hidden', 64, 3, 1, inputs=('up6', 'conv3')),  # 52, 128 input channels
    head_layer(ANCHORS_S8, 'head8'),                                # 52x52, faces under about 24 px
)
# v3: v2 with one more 3x3 layer at stride 8 before head8 (deeper small-face features: the
# window of head8's path from conv3 grows from 31 to 47 px), paid for by a narrower conv6 (256 -> 192), so
# that a pass costs about what v2's does (weights/README.md, the v3 table). A v2 network initialises it with
# train.transplant: conv6 keeps its 192 most important channels, conv8 starts as the identity (float).
LAYERS_V3: tuple[LayerSpec, ...] = (
    *LAYERS[:5],
    LayerSpec('conv6', 'hidden', 192, 3, 1),                        # 26
    *LAYERS_V2[6:10],                                               # head16, lat6, up6, conv7
    LayerSpec('conv8', 'hidden', 64, 3, 1),                         # 52
    LAYERS_V2[10],                                                  # head8
)
# v4: v3 with conv8 in int8 weights (a 'fixed' layer): binarising costs v3 twice what it costs v2,
# and conv8, the layer v3 adds, holds 37 K of its 699 K weights (weights/README.md, run v4a).
LAYERS_V4: tuple[LayerSpec, ...] = (
    *LAYERS_V3[:10],
    replace(LAYERS_V3[10], kind='fixed'),                           # conv8, 52
    LAYERS_V3[11],                                                  # head8
)
# v5: v2 with conv2 and conv3 in int8 weights: the thin early layers (16 and 32 input channels,
# 23 K of the 777 K weights) are where binarising the float network costs most (weights/README.md).
LAYERS_V5: tuple[LayerSpec, ...] = tuple(replace(l, kind='fixed') if l.name in ('conv2', 'conv3') else l
                                         for l in LAYERS_V2)
# v6: v2 whose heads also read the layer below their own input (head16: conv6 + conv5, 448 codes;
# head8: conv7 + conv3, 128 codes). A head is the only int8 layer on the last codes: twice the 2-bit
# features under each box for a few KB and under 1% more multiply-adds (weights/README.md, run v6a).
HEAD_INPUTS_V6 = {'head16': ('conv6', 'conv5'), 'head8': ('conv7', 'conv3')}
LAYERS_V6: tuple[LayerSpec, ...] = tuple(replace(l, inputs=HEAD_INPUTS_V6.get(l.name, l.inputs)) for l in LAYERS_V2)
# v7: v2 with 32 first-layer channels: the image reaches the network through conv1's 2-bit codes, and 16
# channels of 2 bits per 2x2 pixels is where quantizing the float network costs most after conv2's
# weights (weights/README.md, the sensitivity table and run v7a).
LAYERS_V7: tuple[LayerSpec, ...] = (replace(LAYERS_V2[0], out_ch=32), *LAYERS_V2[1:])
NETWORKS: dict[str, tuple[LayerSpec, ...]] = {'v1': LAYERS, 'v2': LAYERS_V2, 'v3': LAYERS_V3, 'v4': LAYERS_V4,
                                              'v5': LAYERS_V5, 'v6': LAYERS_V6, 'v7': LAYERS_V7}
IN_CHANNELS = 3                   # BGR image


def sources(layers: tuple[LayerSpec, ...]) -> list[tuple[int, ...]]:
    """Indices of the layers feeding each layer (concatenated in this order); () for the first."""
    index = {l.name: i for i, l in enumerate(layers)}
    out = []
    for i, layer in enumerate(layers):
        if layer.inputs:
            missing = [n for n in layer.inputs if index.get(n, i) >= i]
            if missing:
                raise ValueError(f'layer {layer.name}: input {missing[0]!r} is not an earlier layer')
            out.append(tuple(index[n] for n in layer.inputs))
        else:
            out.append((i - 1,) if i else ())
    return out


def strides(layers: tuple[LayerSpec, ...] = LAYERS) -> list[int]:
    """Input pixels per output cell of each layer."""
    return list(_strides(layers))


@functools.lru_cache(maxsize=64)   # input checks ask on every detection; tables are immutable
def _strides(layers: tuple[LayerSpec, ...]) -> tuple[int, ...]:
    out: list[int] = []
    for layer, src in zip(layers, sources(layers)):
        s = out[src[0]] if src else 1
        if layer.info.upsamples:
            out.append(s // UPSAMPLE)
        else:
            out.append(s * layer.stride * (layer.pool or 1))
    return tuple(out)


def heads(layers: tuple[LayerSpec, ...] = LAYERS) -> list[int]:
    """Indices of the head layers, in table order."""
    return [i for i, l in enumerate(layers) if l.info.is_head]


def head_strides(layers: tuple[LayerSpec, ...] = LAYERS) -> list[int]:
    """Input pixels per grid cell of each head."""
    st = strides(layers)
    return [st[i] for i in heads(layers)]


def layers_for_heads(layers: tuple[LayerSpec, ...], wanted: tuple[int, ...] | None) -> frozenset[int]:
    """Indices of the layers that the heads numbered `wanted` (table order; None: every head) read,
    directly or through others, and those heads: the layers a run for only these heads computes."""
    index = heads(layers)
    todo = list(index if wanted is None else (index[h] for h in wanted))
    src, need = sources(layers), set()
    while todo:
        i = todo.pop()
        if i not in need:
            need.add(i)
            todo.extend(src[i])
    return frozenset(need)


def coarsest_heads(layers: tuple[LayerSpec, ...]) -> tuple[int, ...]:
    """Numbers (table order) of the heads at the coarsest stride: the only ones the pyramid's
    smaller levels run (see PYRAMID_MIN_CELLS)."""
    st = head_strides(layers)
    return tuple(h for h, s in enumerate(st) if s == max(st))


def total_stride(layers: tuple[LayerSpec, ...] = LAYERS) -> int:
    """Coarsest stride in the table: input sides must be multiples of it."""
    return max(strides(layers))


def grid_size(img_size: int, layers: tuple[LayerSpec, ...] = LAYERS) -> int:
    """Grid cells per side of the coarsest head for a square input of `img_size` pixels."""
    return img_size // max(head_strides(layers))


def in_channels(layers: tuple[LayerSpec, ...] = LAYERS) -> list[int]:
    """Input channels of each layer (sum over its concatenated inputs), derived from the table."""
    return [sum(layers[j].out_ch for j in src) if src else IN_CHANNELS for src in sources(layers)]


def receptive_field(layers: tuple[LayerSpec, ...] = LAYERS) -> int:
    """Input pixels one output of the first head sees (side of its square window)."""
    rf, jump = [], []
    for layer, src in zip(layers, sources(layers)):
        r = max((rf[j] for j in src), default=1)
        s = jump[src[0]] if src else 1
        if layer.info.upsamples:
            rf.append(r)
            jump.append(s // UPSAMPLE)
            continue
        r += (layer.kernel - 1) * s
        s *= layer.stride
        if layer.pool:
            r += (layer.pool - 1) * s
            s *= layer.pool
        rf.append(r)
        jump.append(s)
    return rf[heads(layers)[0]]


# --- image pyramid at inference -----------------------------------------------------------
# The trunk sees receptive_field() = 103 px, so a face much larger than that is only seen in
# parts. Each further pyramid level runs the network at half the previous input side and keeps
# only boxes of at least PYRAMID_MIN_CELLS grid cells: small faces are better seen at full size.
PYRAMID_LEVELS = 2                # default number of input sizes (1: a single pass)
PYRAMID_MIN_CELLS = 2             # smallest box side (longer side, grid cells) kept by levels after the first
# Levels after the first run only the heads at the coarsest stride (coarsest_heads): a finer
# head's boxes are small faces, which the first level sees better, and it hardly ever makes a box
# of PYRAMID_MIN_CELLS coarse cells (none on the dev benchmark), so the layers that only it reads
# (v2's stride-8 branch) are not computed there.
# The optional upscaled level (`--upscale`) runs the network at UPSCALE times the input side and
# keeps only boxes of at most UPSCALE_MAX_CELLS cells: small faces get more pixels, while the
# larger ones, seen better at full size, are not repeated with the larger input's false positives.
UPSCALE = 4 / 3
UPSCALE_MAX_CELLS = 3             # largest box side (longer side, grid cells) kept by the upscaled level
# Upscale modes: 'off', 'on', and the default 'auto', which adds the upscaled level only to crowd
# scenes: images whose other levels find at least AUTO_UPSCALE_FACES boxes scoring
# AUTO_UPSCALE_SCORE or more with sides of at most UPSCALE_MAX_CELLS cells (small faces). On
# crowds the level finds a third more faces at 100 false positives; on portraits it adds mostly
# false positives and time (weights/README.md, session 16).
UPSCALE_MODES = ('off', 'auto', 'on')
AUTO_UPSCALE_FACES = 10
AUTO_UPSCALE_SCORE = 0.4
# A small box is less often a face than a larger one of the same score (precision at scores
# 0.6-0.8: 0.63-0.82 for boxes under 12 input pixels, 0.74-1.0 above, weights/README.md session
# 17), so the detector ranks the merged boxes by score * min(1, side / SMALL_BOX_CELLS) **
# SMALL_BOX_POWER, the side (longer, in grid cells of the first level) under two cells scoring
# up to 13% less. The 'auto' upscale test reads the scores before this discount.
SMALL_BOX_CELLS = 2
SMALL_BOX_POWER = 0.1


def pyramid_sizes(img_size: int, levels: int = PYRAMID_LEVELS,
                  layers: tuple[LayerSpec, ...] = LAYERS) -> list[int]:
    """Input sides of the pyramid levels: img_size, then halved and rounded to the total stride."""
    s = total_stride(layers)
    return [max(s, round(img_size / 2**k / s) * s) for k in range(levels)]


def upscale_size(img_size: int, layers: tuple[LayerSpec, ...] = LAYERS) -> int:
    """Input side of the upscaled level: img_size * UPSCALE rounded to the total stride."""
    s = total_stride(layers)
    return round(img_size * UPSCALE / s) * s


def check_layers(layers: tuple[LayerSpec, ...] = LAYERS, anchors: Anchors | None = None) -> None:
    """Check the table (kinds, wiring, shapes); raise ValueError naming the layer.

    `anchors` (single-head tables only) are checked against the head instead of its own.
    """
    kinds = [l.info for l in layers]   # ValueError naming a layer of unknown kind
    if not kinds or not kinds[0].reads_image:
        raise ValueError('layer table must start with a first layer')
    names = [l.name for l in layers]
    if len(set(names)) != len(names):
        raise ValueError('layer names must be unique')
    if not kinds[-1].is_head:
        raise ValueError('layer table must end with a head')
    src = sources(layers)
    used = {j for s in src for j in s}
    chans = in_channels(layers)
    st = strides(layers)
    for i, (layer, kind) in enumerate(zip(layers, kinds)):
        if i and kind.reads_image:
            raise ValueError(f'layer {layer.name}: only the first layer may be a first layer')
        if kind.is_head and i in used:
            raise ValueError(f'layer {layer.name}: a head cannot feed another layer')
        if any(kinds[j].is_head for j in src[i]):
            raise ValueError(f'layer {layer.name}: reads a head')
        if not kind.is_head and i not in used:
            raise ValueError(f'layer {layer.name}: its output is not used')
        if len({st[j] for j in src[i]}) > 1:
            raise ValueError(f'layer {layer.name}: concatenated inputs have different strides')
        if layer.kernel % 2 != 1:
            raise ValueError(f'layer {layer.name}: kernel {layer.kernel} must be odd (same padding)')
        if layer.pool not in (0, 2):
            raise ValueError(f'layer {layer.name}: pool must be 0 or 2, not {layer.pool}')
        if kind.upsamples and (layer.out_ch != chans[i] or layer.kernel != 1
                               or layer.stride != 1 or layer.pool):
            raise ValueError(f'layer {layer.name}: an upsample layer keeps its {chans[i]} channels '
                             f'and has no kernel, stride or pool')
        if kind.is_head:
            head_anchors = layer.anchors if anchors is None else anchors
            if not head_anchors:
                raise ValueError(f'layer {layer.name}: a head needs anchors')
            if layer.out_ch != len(head_anchors) * VALUES_PER_ANCHOR:
                raise ValueError(f'layer {layer.name}: {layer.out_ch} channels, expected '
                                 f'{len(head_anchors)} anchors x {VALUES_PER_ANCHOR} = '
                                 f'{len(head_anchors) * VALUES_PER_ANCHOR}')
            if layer.kernel != 1 or layer.stride != 1 or layer.pool:
                raise ValueError(f'layer {layer.name}: the head must be a 1x1 stride-1 conv without pool')
        elif layer.anchors:
            raise ValueError(f'layer {layer.name}: only heads have anchors')
    if anchors is not None and len(heads(layers)) != 1:
        raise ValueError('separate anchors are only given for a single-head table')


def check_input_size(img_size: int, layers: tuple[LayerSpec, ...] = LAYERS, what: str = 'img_size') -> None:
    """Raise ConfigError (`what: ...`) unless `img_size` is a positive multiple of the total stride."""
    s = total_stride(layers)
    if img_size <= 0 or img_size % s:
        raise ConfigError(f'{what}: input size {img_size} must be a positive multiple of {s}')


check_layers()


def layers_to_list(layers: tuple[LayerSpec, ...] = LAYERS) -> list[dict]:
    """The table as plain data (stored in checkpoints and model files)."""
    rows = []
    for l in layers:
        row = dict(name=l.name, kind=l.kind, out_ch=l.out_ch, kernel=l.kernel, stride=l.stride, pool=l.pool)
        if l.inputs:
            row['inputs'] = list(l.inputs)
        if l.anchors:
            row['anchors'] = [list(a) for a in l.anchors]
        rows.append(row)
    return rows


def layers_from_list(rows: list[dict]) -> tuple[LayerSpec, ...]:
    """Inverse of `layers_to_list`; raises ValueError on a malformed table."""
    try:
        layers = tuple(LayerSpec(str(r['name']), str(r['kind']), int(r['out_ch']), int(r['kernel']),
                                 int(r['stride']), int(r['pool']), tuple(str(n) for n in r.get('inputs', ())),
                                 tuple((float(w), float(h)) for w, h in r.get('anchors', ())))
                       for r in rows)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f'malformed layer table: {e}') from None
    return layers


def with_head_anchors(layers: tuple[LayerSpec, ...], anchors: Anchors) -> tuple[LayerSpec, ...]:
    """A single-head table with `anchors` set on its head (tables stored before heads carried anchors)."""
    return tuple(replace(l, anchors=tuple(map(tuple, anchors))) if l.info.is_head else l for l in layers)


def without_anchors(layers: tuple[LayerSpec, ...]) -> tuple[LayerSpec, ...]:
    """The table with the heads' anchors removed (the integer model keeps them in fixed point)."""
    return tuple(replace(l, anchors=()) for l in layers)


def anchors_of(layers: tuple[LayerSpec, ...]) -> list[Anchors]:
    """Anchors of each head, in table order."""
    return [layers[i].anchors for i in heads(layers)]
