"""Random integer models (no training, no torch) for the export and native-runtime tests."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.engine.model import IntegerModel, IntLayer

# threshold spread of a layer per sqrt(fan-in) (the first layer: absolute), so that random inputs
# give every code
ACC_SPREAD = {'first': 40000, 'hidden': 4, 'fixed': 130}
FALLBACK_ANCHORS = ((1.0, 1.5), (2.0, 1.0))   # heads whose spec names none (anchors in cells)


def random_integer_model(table: tuple[netdef.LayerSpec, ...], seed: int, size: int = 32, bias_max: int = 5000,
                         head_shifts: tuple[int, ...] = (40, 38)) -> IntegerModel:
    """A valid integer model of `table` (a chain or a graph) at input side `size`: random weights,
    thresholds, signs (about half negative) and head biases; the heads take their spec's anchors (else
    FALLBACK_ANCHORS) and each its own output scale (shifts in turn from `head_shifts`), so that heads
    rank on one key only when the engines agree on every scale."""
    rng = np.random.default_rng(seed)
    layers, heads = [], 0
    for s, in_ch in zip(table, netdef.in_channels(table)):
        shape = (s.out_ch, in_ch, s.kernel, s.kernel)                  # (O, I, k, k)
        if s.kind == 'upsample':
            layers.append(IntLayer(s, in_ch, None))
            continue
        if s.kind == 'head':
            anchors = s.anchors or FALLBACK_ANCHORS[:s.out_ch // netdef.VALUES_PER_ANCHOR]
            layers.append(IntLayer(replace(s, anchors=()), in_ch, rng.integers(-127, 128, shape, dtype=np.int8),
                                   bias=rng.integers(-bias_max, bias_max + 1, s.out_ch, dtype=np.int32),
                                   anchors_q16=np.round(np.array(anchors) * 65536).astype(np.int64),
                                   out_multiplier=(1 << 30) + heads * 12345,
                                   out_shift=head_shifts[heads % len(head_shifts)]))
            heads += 1
            continue
        first, binary = s.kind == 'first', s.weight_bits == netdef.BINARY_WEIGHT_BITS
        w = (rng.choice([-1, 1], shape) if binary else rng.integers(-127, 128, shape)).astype(np.int8)
        fan_in = in_ch * s.kernel ** 2
        spread = ACC_SPREAD[s.kind] * (1 if first else np.sqrt(fan_in))
        reach = fan_in * netdef.HWGQ_LEVELS * (1 if binary else netdef.FIXED_WEIGHT_MAX)   # |accumulator| on codes
        t = rng.normal(0, spread, (s.out_ch, 3)).round()
        t = np.sort(t if first else t.clip(-reach, reach), axis=1).astype(np.int16 if binary else np.int32)
        layers.append(IntLayer(s, in_ch, w, t, rng.choice([-1, 1], s.out_ch).astype(np.int8)))
    model = IntegerModel(tuple(layers), size)
    model.check()
    return model
