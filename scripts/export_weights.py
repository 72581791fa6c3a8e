"""Strip a training checkpoint to what inference needs (no optimizer state): a few MB to commit.

    python scripts/export_weights.py runs/hwgq1/best.pt weights/ifq_tinier_yolo.pt [--img-size 512]

--img-size sets the input side the shipped model runs at (default: the checkpoint's).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifq_tinier_yolo import netdef  # noqa: E402
from ifq_tinier_yolo.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('src', type=Path)
    ap.add_argument('dst', type=Path)
    ap.add_argument('--img-size', type=int, default=None)
    args = ap.parse_args()
    ckpt = load_checkpoint(args.src)
    model = model_from_checkpoint(ckpt, path=args.src)
    size = args.img_size or ckpt['img_size']
    netdef.check_input_size(size, model.layers)
    keep = {k: ckpt[k] for k in ('epoch', 'best', 'step') if k in ckpt}
    save_checkpoint(args.dst, model, size, ckpt['config'], **keep)
    print(f'{args.dst}: {args.dst.stat().st_size:,} bytes (epoch {keep.get("epoch")}, best {keep.get("best")}, '
          f'input {size})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
