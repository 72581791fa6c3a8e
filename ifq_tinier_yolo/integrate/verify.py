"""`verify`: the integer engine against the quantized PyTorch model, image by image, bit for bit.

For each image: letterbox at the model's input size, run the engine (`runtime.run_heads`) and
the torch network (`head_integers`), compare the int32 accumulators of every head exactly. Prints
`bit-exact K/N` and exits non-zero unless K == N; unreadable images count as failures.
With --compare-separated it also converts the checkpoint the separated way in memory and
prints, for both conversions, the head values that differ from torch and the detections
that agree with the torch detections (IoU >= 0.5), to measure what integration buys.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .. import netdef
from ..checkpoint import load_checkpoint, model_from_checkpoint
from ..defaults import DEFAULT_NMS
from ..engine import runtime
from ..engine.model import IntegerModel
from ..engine.nms import iou_matrix
from ..engine.preprocess import letterbox
from ..errors import ImageError, ModelFileError
from ..imageio import IMAGE_EXTENSIONS, read_image
from ..model.predict import decode_nms_float, to_input
from ..model.tinier_yolo import TinierYolo
from .convert import convert_model

MATCH_IOU = 0.5           # two detections agree when their IoU reaches this


def collect_images(sources: list[Path]) -> list[Path]:
    """Files as given, folders searched recursively for image files (sorted); missing paths kept."""
    out: list[Path] = []
    for src in sources:
        if src.is_dir():
            out += sorted(p for p in src.rglob('*') if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        else:
            out.append(src)
    return out


def torch_heads(net: TinierYolo, canvas: np.ndarray) -> list[np.ndarray]:
    """The torch network's accumulators (A*5, H, W) of each head as float64 (integer-valued), for one canvas."""
    with torch.no_grad():
        return [h[0].numpy().astype(np.float64) for h in net.head_integers(to_input([canvas]))]


def engine_detections(model: IntegerModel, heads: list[np.ndarray], conf: float, nms_iou: float) -> np.ndarray:
    """Fixed-point decode + integer NMS of int32 heads -> float64 (N, 4) boxes in network pixels."""
    return runtime.decode_heads(model.decoders, heads, conf, nms_iou)[0]


def float_detections(net: TinierYolo, model: IntegerModel, heads: list[np.ndarray], conf: float,
                     nms_iou: float) -> np.ndarray:
    """What the torch path reports: float decode of each head * its out_scale + NMS -> (N, 4) network pixels."""
    values = [h.astype(np.float32) * np.float32(layer.out_scale)      # as the float head computes
              for h, layer in zip(heads, model.heads)]
    return decode_nms_float(values, net.head_anchors, model.head_strides, conf, nms_iou)[0]


def flat(heads: list[np.ndarray]) -> np.ndarray:
    """All heads' values in one vector (for counting)."""
    return np.concatenate([h.ravel() for h in heads])


def matched(a: np.ndarray, b: np.ndarray) -> int:
    """Greedy one-to-one matches between (N, 4) and (M, 4) boxes with IoU >= MATCH_IOU."""
    if not len(a) or not len(b):
        return 0
    iou = iou_matrix(a.astype(np.float64), b.astype(np.float64))       # (N, M)
    count = 0
    for row in iou:                                                      # a in its (score) order
        j = int(row.argmax())
        if row[j] >= MATCH_IOU:
            iou[:, j] = -1.0                                             # b[j] is taken
            count += 1
    return count


@dataclass
class Tally:
    """Agreement of one integer model with torch, summed over images."""
    exact: int = 0
    values_differ: int = 0
    values: int = 0
    det_match: int = 0
    det_union: int = 0
    max_abs_diff: int = 0

    def add(self, head: np.ndarray, ref: np.ndarray, dets: np.ndarray, ref_dets: np.ndarray) -> bool:
        """Count one image: int32 engine head vs float64 torch head, and their detections."""
        diff = np.abs(head.astype(np.float64) - ref)                     # exact: both below 2**31
        ok = not diff.any()
        self.exact += ok
        self.values_differ += int(np.count_nonzero(diff))
        self.values += diff.size
        self.max_abs_diff = max(self.max_abs_diff, int(np.ceil(diff.max(initial=0))))
        m = matched(ref_dets, dets)
        self.det_match += m
        self.det_union += len(ref_dets) + len(dets) - m
        return ok

    def lines(self, prefix: str) -> list[str]:
        pct = 100.0 * self.values_differ / max(self.values, 1)
        agree = 100.0 * self.det_match / max(self.det_union, 1)
        return [f'{prefix}head values differing {self.values_differ}/{self.values} ({pct:.3f}%, '
                f'max |diff| {self.max_abs_diff})',
                f'{prefix}detections agreeing {self.det_match}/{self.det_union} ({agree:.1f}%)']


def cli_verify(args: argparse.Namespace) -> int:
    """`verify --model M.ifq --checkpoint C.pt IMAGE_OR_DIR...`: prints `bit-exact K/N`."""
    torch.set_num_threads(1)   # torch's idle OpenMP workers would otherwise starve numpy's BLAS threads
    model = runtime.load_model(args.model)
    net = model_from_checkpoint(load_checkpoint(args.checkpoint), quant='hwgq', path=args.checkpoint)
    if netdef.without_anchors(net.layers) != model.specs:
        raise ModelFileError(f'{args.model} and {args.checkpoint} describe different layer tables')
    size = args.img_size or model.input_size
    netdef.check_input_size(size, model.specs)
    compare = getattr(args, 'compare_separated', False)
    conf, nms_iou = getattr(args, 'conf', 0.3), getattr(args, 'nms', DEFAULT_NMS)
    others = {'separated ': convert_model(net, size, separated=True)} if compare else {}
    tallies = {'': Tally(), **{k: Tally() for k in others}}
    images = collect_images(list(args.sources))
    if not images:
        raise ImageError(f'no image files found in {", ".join(map(str, args.sources))}')
    for path in images:
        try:
            image = read_image(path)
        except ImageError as e:
            print(f'error: {e}', file=sys.stderr)
            continue
        canvas = letterbox(image, size)[0]
        ref = torch_heads(net, canvas)
        ref_dets = float_detections(net, model, ref, conf, nms_iou) if compare else np.zeros((0, 4))
        for prefix, m in (('', model), *others.items()):
            heads = runtime.run_heads(m, canvas)
            dets = engine_detections(m, heads, conf, nms_iou) if compare else np.zeros((0, 4))
            got, want = flat(heads), flat(ref)
            if not tallies[prefix].add(got, want, dets, ref_dets) and not prefix:
                print(f'{path}: {int(np.count_nonzero(got != want))} of {got.size} head values differ',
                      file=sys.stderr)
    print(f'bit-exact {tallies[""].exact}/{len(images)}' + (f' (heads {", ".join(h.spec.name for h in model.heads)})'
                                                              if len(model.heads) > 1 else ''))
    if compare:
        for prefix, tally in tallies.items():
            kind = prefix.strip() or ('model' if model.separated else 'integrated')
            print(f'{kind} bit-exact {tally.exact}/{len(images)}')
            for line in tally.lines(f'{kind} '):
                print(line)
    return 0 if tallies[''].exact == len(images) else 1
