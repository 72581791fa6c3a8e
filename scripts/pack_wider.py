"""Pack a WIDER FACE copy for a machine with little room: images shrunk and re-encoded, same layout.

Writes <out>/WIDER_<split>/images/<event>/*.jpg with the longer side at most --side px (never
enlarged) as JPEG of --quality, and <out>/wider_face_split/wider_face_<split>_bbx_gt.txt with
every face row (invalid faces too) scaled to match, rounded to whole pixels as the official
format has them. `train --wider-root <out>` reads it unchanged. Used to carry the training set to
a GPU machine, where 64 MiB travel a call with the repository's own tracked files (27 MB): the
3,048 training images take 56.0 MB at 416 px and quality 60, 40.6 MB at 352 px and quality 55;
and as a pre-resized cache where the originals are much larger than the training views need. Usage:

    python scripts/pack_wider.py --wider-root ../shared/data/wider --out /tmp/wider352 --side 352 --quality 55
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifq_tinier_yolo.datasets.wider import annotation_path, images_dir, read_wider  # noqa: E402
from ifq_tinier_yolo.errors import IfqError  # noqa: E402
from ifq_tinier_yolo.fileio import atomic_open, atomic_write_text  # noqa: E402
from ifq_tinier_yolo.imageio import read_image  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / 'shared' / 'data' / 'wider'


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--wider-root', type=Path, default=DEFAULT_ROOT)
    p.add_argument('--out', type=Path, required=True, help='folder of the packed copy (created)')
    p.add_argument('--side', type=int, default=416, help='longest image side in the copy, px')
    p.add_argument('--quality', type=int, default=60, help='JPEG quality, 1-100')
    p.add_argument('--splits', nargs='+', default=['train'], choices=('train', 'val'))
    args = p.parse_args(argv)
    if args.side < 32 or not 1 <= args.quality <= 100:
        p.error('--side must be >= 32 and --quality 1-100')
    if args.out.resolve() == args.wider_root.resolve():
        p.error('--out must not be the WIDER root itself')
    return args


def annotation_text(rows: list[tuple[str, np.ndarray]]) -> str:
    """The official annotation format: name, count, one 'x y w h + 6 attributes' row per face
    (a face-less image has one all-zero placeholder row)."""
    out = []
    for name, faces in rows:
        out += [name, str(len(faces))]
        out += [' '.join(map(str, row)) + ' ' for row in (faces if len(faces) else np.zeros((1, 10), np.int64))]
    return '\n'.join(out) + '\n'


def pack_split(root: Path, out: Path, split: str, side: int, quality: int) -> tuple[int, int]:
    """Pack one split; (images, bytes of the images written)."""
    items = read_wider(root, split, drop_invalid=False)
    rows, total = [], 0
    for it in tqdm(items, desc=f'pack {split}', unit='image'):
        image = read_image(it.path)
        scale = min(1.0, side / max(image.shape[:2]))
        if scale < 1.0:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        ok, data = cv2.imencode('.jpg', image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise IfqError(f'{it.path}: cannot encode as JPEG')
        with atomic_open(images_dir(out, split) / it.name, 'wb') as f:
            f.write(data.tobytes())
        total += len(data)
        boxes = np.rint(it.boxes.astype(np.float64) * scale).astype(np.int64)
        rows.append((it.name, np.concatenate([boxes, it.attrs.astype(np.int64)], axis=1)))
    atomic_write_text(annotation_path(out, split), annotation_text(rows))
    return len(items), total


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        for split in args.splits:
            n, size = pack_split(args.wider_root, args.out, split, args.side, args.quality)
            print(f'{split}: {n} images, {size / 1e6:.1f} MB of JPEG at <= {args.side} px, quality {args.quality}')
    except (IfqError, OSError) as e:
        print(f'error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
