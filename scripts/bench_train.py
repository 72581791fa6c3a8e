"""What a training step costs on this machine: data loading against the network, and the options
that might make the network step faster (channels_last memory layout, bfloat16 autocast, torch.compile).

    .venv/bin/python scripts/bench_train.py [--wider-root R] [--net v2] [--quant hwgq]
                                            [--img-size 320] [--batch 16] [--steps 8]

Prints, per variant, the median seconds of one optimizer step (forward, loss, backward, AdamW)
on a fixed augmented batch, and the seconds to make one batch in the main process (image read,
augmentation, collate). Variants alternate step by step so that all see the same machine load;
each also reports how far its loss after the timed steps lies from eager's (a variant that
changes results is no speed-up).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifq_tinier_yolo import netdef  # noqa: E402
from ifq_tinier_yolo.datasets.loader import WiderTrainSet, collate  # noqa: E402
from ifq_tinier_yolo.datasets.wider import read_wider  # noqa: E402
from ifq_tinier_yolo.model.loss import LossConfig, detection_loss  # noqa: E402
from ifq_tinier_yolo.model.tinier_yolo import TinierYolo  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'wider'


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--wider-root', type=Path, default=DEFAULT_ROOT)
    p.add_argument('--net', default='v2', choices=sorted(netdef.NETWORKS))
    p.add_argument('--quant', default='hwgq', choices=('float', 'hwgq'))
    p.add_argument('--img-size', type=int, default=320)
    p.add_argument('--batch', type=int, default=16)
    p.add_argument('--steps', type=int, default=8, help='timed steps per variant (after 2 warm-up steps)')
    p.add_argument('--no-compile', action='store_true', help='skip the torch.compile variant')
    return p.parse_args()


def make_batch(root: Path, img_size: int, batch: int) -> tuple[tuple[torch.Tensor, torch.Tensor], float]:
    """One augmented batch and the seconds it took to make in this process."""
    items = read_wider(root, 'train')[:batch]
    data = WiderTrainSet(items, img_size, augment=True, seed=0)
    t0 = time.perf_counter()
    out = collate([data[i] for i in range(batch)])
    return out, time.perf_counter() - t0


class Variant:
    """A model copy with its optimizer and step function."""

    def __init__(self, name: str, base: TinierYolo, channels_last: bool, compiled: bool, bf16: bool = False):
        self.name = name
        self.model = TinierYolo(base.layers, quant=base.quant)
        self.model.load_state_dict(base.state_dict())
        self.model.train()
        self.channels_last = channels_last
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.model) if compiled else self.model
        self.bf16 = bf16
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.anchors = [torch.tensor(a, dtype=torch.float32) for a in self.model.head_anchors]
        self.times: list[float] = []
        self.loss = float('nan')

    def step(self, images: torch.Tensor, targets: torch.Tensor, timed: bool) -> None:
        t0 = time.perf_counter()
        x = images.float()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=self.bf16):
            heads = self.net(x)
        loss, _ = detection_loss([h.float() for h in heads], targets, self.anchors, LossConfig())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.loss = loss.item()
        if timed:
            self.times.append(time.perf_counter() - t0)


def main() -> int:
    args = parse_args()
    torch.manual_seed(0)
    (images, targets), batch_s = make_batch(args.wider_root, args.img_size, args.batch)
    base = TinierYolo(netdef.NETWORKS[args.net], quant=args.quant)
    variants = [Variant('eager', base, False, False), Variant('channels_last', base, True, False),
                Variant('bf16', base, False, False, bf16=True), Variant('bf16+cl', base, True, False, bf16=True)]
    if not args.no_compile:
        variants.append(Variant('compile', base, False, True))
    for i in range(2 + args.steps):
        for v in variants:
            v.step(images, targets, timed=i >= 2)
    print(f'torch {torch.__version__}, {torch.get_num_threads()} threads, net {args.net}, quant {args.quant}, '
          f'{args.batch} x {args.img_size} px')
    print(f'make one batch in the main process: {batch_s:.3f} s')
    eager = variants[0]
    for v in variants:
        med = statistics.median(v.times)
        print(f'{v.name:14s} step {med:.3f} s  ({args.batch / med:5.1f} images/s, '
              f'{statistics.median(eager.times) / med:.2f}x eager)  loss after {2 + args.steps} steps '
              f'{v.loss:.4f} (eager {eager.loss:.4f})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
