"""Where does quantization cost a float network? One change at a time, no training.

Takes a float checkpoint and, for each block, binarises its weights (alpha * sign, per channel)
or quantises its output to 2-bit HWGQ codes, alone, and binarises every hidden layer but one;
recomputes the BatchNorm statistics on a few augmented training views (a binary layer changes
the scale of what follows) and scores the dev validation (TPR@100FP / 500FP, one pass).

    python scripts/quant_sensitivity.py weights/v3float.pt --wider-root ../shared/data/wider
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ifq_tinier_yolo.checkpoint import load_checkpoint, model_from_checkpoint   # noqa: E402
from ifq_tinier_yolo.datasets.loader import WiderTrainSet, collate               # noqa: E402
from ifq_tinier_yolo.datasets.wider import read_wider                            # noqa: E402
from ifq_tinier_yolo.model.quant import binarize_weights, hwgq_codes             # noqa: E402
from ifq_tinier_yolo.model.tinier_yolo import TinierYolo                         # noqa: E402
from ifq_tinier_yolo.netdef import HWGQ_STEP                                     # noqa: E402
from ifq_tinier_yolo.validate import DevBenchmark                                # noqa: E402

BATCH = 16


def binarise(model: TinierYolo, names: set[str]) -> TinierYolo:
    """The float weights of the named blocks replaced by alpha * sign (what hwgq mode computes)."""
    for b in model.blocks:
        if b.spec.name in names:
            signs, alpha = binarize_weights(b.conv.weight.data)
            b.conv.weight.data = signs * alpha.view(-1, 1, 1, 1)
    return model


def two_bit(model: TinierYolo, names: set[str]) -> TinierYolo:
    """The outputs of the named blocks quantised to HWGQ codes times their step (ReLU first, so
    the codes equal those of the pre-activation)."""
    for b in model.blocks:
        if b.spec.name in names:
            b.register_forward_hook(lambda module, args, out: hwgq_codes(out) * HWGQ_STEP)
    return model


def recalibrate(model: TinierYolo, batches: list[torch.Tensor]) -> TinierYolo:
    """BatchNorm statistics recomputed as plain averages over `batches`; eval mode."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    return model.eval()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('checkpoint', type=Path, help='a float checkpoint')
    p.add_argument('--wider-root', type=Path, required=True)
    p.add_argument('--views', type=int, default=256, help='training views for the BatchNorm statistics')
    p.add_argument('--crop', type=int, default=320, help='side of those views')
    p.add_argument('--size', type=int, default=576, help='validation input side')
    args = p.parse_args()
    base = model_from_checkpoint(load_checkpoint(args.checkpoint), 'float', args.checkpoint).eval()
    val = DevBenchmark(args.wider_root)
    views = WiderTrainSet(read_wider(args.wider_root, 'train')[:args.views], args.crop, augment=True, seed=0)
    views.set_epoch(0)
    batches = [collate([views[i] for i in range(j, min(j + BATCH, len(views)))])[0]
               for j in range(0, len(views), BATCH)]
    blocks = [b.spec.name for b in base.blocks]
    hidden = [b.spec.name for b in base.blocks if not b.spec.info.reads_image]
    changes: list[tuple[str, str, Callable[[TinierYolo], TinierYolo]]] = [('none', 'float', lambda m: m)]
    changes += [('binary weights', n, lambda m, n=n: binarise(m, {n})) for n in hidden]
    changes += [('binary weights', 'all hidden', lambda m: binarise(m, set(hidden)))]
    changes += [('binary weights, all hidden but', n, lambda m, n=n: binarise(m, set(hidden) - {n})) for n in hidden]
    changes += [('2-bit output', n, lambda m, n=n: two_bit(m, {n})) for n in blocks]
    changes += [('2-bit output', 'all', lambda m: two_bit(m, set(blocks)))]
    print('| change | layer | TPR@100FP | TPR@500FP |\n| --- | --- | --- | --- |')
    for what, layer, change in tqdm(changes, desc='changes', file=sys.stderr):
        r = val.evaluate(recalibrate(change(copy.deepcopy(base)), batches), args.size)
        tqdm.write(f'| {what} | {layer} | {r["tpr@100fp"]:.3f} | {r["tpr@500fp"]:.3f} |', file=sys.stdout)
    return 0


if __name__ == '__main__':
    sys.exit(main())
