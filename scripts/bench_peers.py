"""Side-by-side benchmark: our detector vs YuNet on the WIDER val subset, in one run.

Both see each image with its longer side at the same input size. Scored FDDB-style on the dev
benchmark (discrete TPR at 100 FP, official FDDB semantics) and by the WIDER protocol
(easy / medium / hard AP). Prints two markdown tables: TPR@100FP, APs, model bytes, ms/image;
then recall by face height at each detector's own 100-FP threshold.

    python scripts/bench_peers.py --wider-root ../shared/data/wider --peer ../shared/peers/face_detection_yunet.onnx

`--crowd N` scores N crowd scenes instead (validate.crowd_items: WIDER train images of at least 10
faces from the events the dev set lacks; FDDB-style only, the WIDER protocol's ground truth
covers val alone). Both detectors were trained on WIDER train, so those figures are optimistic
for both; they rank settings and detectors on what the dev set hardly has, small faces in crowds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ifq_tinier_yolo import Detector                                  # noqa: E402
from ifq_tinier_yolo.evaluation.fddb import tpr_at_fp                   # noqa: E402
from ifq_tinier_yolo.evaluation.wider import evaluate_wider, load_ground_truth  # noqa: E402
from ifq_tinier_yolo.fileio import atomic_open                         # noqa: E402
from ifq_tinier_yolo.netdef import PYRAMID_LEVELS, UPSCALE_MODES       # noqa: E402
from ifq_tinier_yolo.validate import DevBenchmark, threshold_at_fp     # noqa: E402

LOW_CONF = 0.01   # low thresholds: the ROC and AP need the whole score range


class YuNet:
    """OpenCV's YuNet on the image resized so that its longer side is `size`."""

    def __init__(self, path: Path, size: int):
        self.size = size
        self.net = cv2.FaceDetectorYN.create(str(path), '', (size, size), LOW_CONF, 0.45, 5000)

    def detect_array(self, image: np.ndarray) -> np.ndarray:
        """uint8 BGR -> float64 (N, 5) x, y, w, h, score in original pixels."""
        h, w = image.shape[:2]
        s = self.size / max(h, w)
        small = cv2.resize(image, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_LINEAR)
        self.net.setInputSize((small.shape[1], small.shape[0]))
        _, faces = self.net.detect(small)
        if faces is None:
            return np.zeros((0, 5))
        out = faces[:, [0, 1, 2, 3, 14]].astype(np.float64)
        out[:, :4] /= s
        return out


def run(detector, images: list[np.ndarray]) -> tuple[list[np.ndarray], float]:
    """Detections per image and mean milliseconds per image (one warm-up call first)."""
    detector.detect_array(images[0])
    t = time.perf_counter()
    dets = [detector.detect_array(im) for im in images]
    return dets, 1000 * (time.perf_counter() - t) / len(images)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--wider-root', type=Path, default=ROOT.parent / 'shared' / 'data' / 'wider')
    ap.add_argument('--peer', type=Path, default=ROOT.parent / 'shared' / 'peers' / 'face_detection_yunet.onnx')
    ap.add_argument('--model', type=Path, action='append', default=None,
                    help='our model files (.ifq integer engine, .pt torch); repeat for several')
    ap.add_argument('--size', type=int, default=416, help='longer image side given to every detector')
    ap.add_argument('--levels', type=int, nargs='+', default=[PYRAMID_LEVELS],
                    help='image pyramid levels of our detectors; several give one row each')
    ap.add_argument('--upscale', nargs='+', choices=UPSCALE_MODES, default=['auto'],
                    help='upscale modes of our detectors (Detector upscale); several give one row each')
    ap.add_argument('--flip', action='store_true',
                    help='add a row for each of our detectors that also runs the mirror image (Detector flip)')
    ap.add_argument('--max-images', type=int, default=0)
    ap.add_argument('--crowd', type=int, default=0, metavar='N',
                    help='score N crowd scenes of the train split instead of the dev images (see above)')
    ap.add_argument('--plot', type=Path, default=None, help='write the discrete ROCs of all detectors to this PNG')
    args = ap.parse_args()

    bench = DevBenchmark(args.wider_root, args.max_images, args.crowd)
    images = bench.images
    gt = None if args.crowd else load_ground_truth(args.wider_root / 'wider_face_split')
    keys = [name.removesuffix('.jpg') for name in bench.names]

    models = args.model or [ROOT / 'weights' / 'ifq_tinier_yolo.ifq']
    contenders = [(f'ours {m.name}' + (f' ({k} level{"s" * (k > 1)})' if len(args.levels) > 1 else '')
                   + ('' if up == 'auto' else f' (upscale {up})') + (' + mirror' if flip else ''),
                   Detector.load(m, conf=LOW_CONF, img_size=args.size, levels=k, flip=flip, upscale=up),
                   m.stat().st_size)
                  for m in models for k in args.levels
                  for up in args.upscale
                  for flip in ((False, True) if args.flip else (False,))]
    if args.peer.is_file():
        contenders.append(('YuNet (OpenCV zoo)', YuNet(args.peer, args.size), args.peer.stat().st_size))
    else:
        print(f'warning: no peer model at {args.peer}', file=sys.stderr)

    print(f'{len(images)} WIDER {"train crowd" if args.crowd else "val"} images, longer side {args.size} px, '
          f'{sum(len(e) for e in bench.ellipses)} faces in the FDDB-style benchmark')
    print('| detector | TPR@100FP (FDDB disc.) | easy AP | medium AP | hard AP | model bytes | ms/image |')
    print('| --- | --- | --- | --- | --- | --- | --- |')
    curves, by_size = [], []
    for name, detector, nbytes in contenders:
        dets, ms = run(detector, images)
        roc = bench.roc(dets)
        curves.append((name, roc.disc))
        by_size.append((name, bench.by_size(dets, threshold_at_fp(roc.disc, 100))))
        tpr = tpr_at_fp(roc.disc, 100)
        aps = '- | - | -'   # easy / medium / hard: the WIDER ground truth covers val only
        if gt is not None:
            aps = ' | '.join(f'{v:.3f}' for v in evaluate_wider(dict(zip(keys, dets)), gt).values())
        print(f'| {name} | {tpr:.3f} | {aps} | {nbytes:,} | {ms:.1f} |', flush=True)
    bins = [k for k in by_size[0][1] if k.startswith('recall_')]
    print('\nrecall by face height (px) at each detector\'s own 100-FP threshold, '
          'and the median IoU of the faces found')
    print('| detector | ' + ' | '.join(k.removeprefix('recall_') for k in bins) + ' | median IoU |')
    print('| --- |' + ' --- |' * (len(bins) + 1))
    for name, row in by_size:
        print(f'| {name} | ' + ' | '.join(f'{row[k]:.2f}' for k in bins) + f' | {row["median_iou"]:.2f} |')
    if args.plot:
        where = 'crowd scenes' if args.crowd else 'dev benchmark'
        plot_rocs(curves, args.plot, f'{where}, longer side {args.size} px')
        print(f'wrote {args.plot}')
    return 0


def plot_rocs(curves: list[tuple[str, np.ndarray]], path: Path, title: str) -> None:
    """Discrete ROCs (rows TPR, FP, threshold) of several detectors in one PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, disc in curves:
        order = np.argsort(disc[:, 1], kind='stable')
        ax.plot(disc[order, 1], disc[order, 0], label=name)
    ax.set(xlim=(0, 1000), ylim=(0, 1), xlabel='false positives', ylabel='true positive rate (discrete)', title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc='lower right')
    fig.tight_layout()
    with atomic_open(path, 'wb') as f:
        fig.savefig(f, format='png', dpi=100)
    plt.close(fig)


if __name__ == '__main__':
    sys.exit(main())
