"""Strip a training checkpoint to what inference needs (no optimizer state): a few MB to commit.

    python scripts/export_weights.py runs/hwgq1/best.pt weights/ifq_tinier_yolo.pt
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifq_tinier_yolo.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint  # noqa: E402


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    src, dst = Path(sys.argv[1]), Path(sys.argv[2])
    ckpt = load_checkpoint(src)
    model = model_from_checkpoint(ckpt, path=src)
    keep = {k: ckpt[k] for k in ('epoch', 'best', 'step') if k in ckpt}
    save_checkpoint(dst, model, ckpt['img_size'], ckpt['config'], **keep)
    print(f'{dst}: {dst.stat().st_size:,} bytes (epoch {keep.get("epoch")}, best {keep.get("best")})')
    return 0


if __name__ == '__main__':
    sys.exit(main())
