"""Speed of the integer engines (numpy, native C) against YuNet, side by side, in one run.

    .venv/bin/python scripts/bench_engine.py [--model M.ifq] [--sizes 416,576] [--threads 1,2]
                                             [--runs 30] [--torch] [--kernels auto,avx512]

For each thread count a child process (BLAS, OpenCV and torch limited to that many threads)
times, at each input size, one detection pass on the same image including letterbox, decode
and NMS: the numpy engine (`runtime.detect`), the native runtime (`native` backend, each kernel set
of --kernels; with N threads it splits the head rows into N bands) and YuNet (cv2.FaceDetectorYN, the image resized
to the same longer side). Then the default detector settings (image pyramid, `Detector`) on both
engines against YuNet at the model's input size. Every contender keeps boxes at the detectors'
default score threshold and NMS IoU (defaults.py). Runs alternate between the contenders so that
all see the same machine load; medians in milliseconds. `--torch` adds the float PyTorch model
of the same layer table (forward only).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ifq_tinier_yolo.defaults import DEFAULT_CONF as CONF, DEFAULT_NMS as NMS   # noqa: E402 - the detectors' own
SAMPLE = ROOT / 'data' / 'samples' / 'grace_hopper.jpg'
MODEL = ROOT / 'weights' / 'ifq_tinier_yolo.ifq'
PEER = ROOT.parent / 'shared' / 'peers' / 'face_detection_yunet.onnx'
WARMUP = 3
THREAD_VARS = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--model', type=Path, default=MODEL, help='.ifq model')
    p.add_argument('--peer', type=Path, default=PEER, help='YuNet ONNX file (skipped if missing)')
    p.add_argument('--image', type=Path, default=SAMPLE, help='the image every contender detects on')
    p.add_argument('--sizes', default='416,576', help='comma-separated input sides (longer image side)')
    p.add_argument('--threads', default='1,2', help='comma-separated thread counts; all = every core')
    p.add_argument('--runs', type=int, default=30, help='timed runs per contender (median reported)')
    p.add_argument('--torch', action='store_true', help='also time the float PyTorch model (forward only)')
    p.add_argument('--kernels', default='auto',
                   help='comma-separated native kernel sets, the first for the ratio and the default detector')
    p.add_argument('--child', type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def contenders(args: argparse.Namespace, image) -> dict[str, object]:
    """name -> zero-argument function doing one detection pass (built in the child process)."""
    import cv2

    from ifq_tinier_yolo import native
    from ifq_tinier_yolo.apps.detector import Detector
    from ifq_tinier_yolo.engine import runtime

    model = runtime.load_model(args.model)
    backends = {k: native.load(args.model, kernels=k, threads=args.child) for k in kernel_sets(args)}
    out: dict[str, object] = {}
    for size in map(int, args.sizes.split(',')):
        out[f'numpy {size}'] = lambda s=size: runtime.detect(model, image, CONF, NMS, img_size=s)
        for k, backend in backends.items():
            out[f'native {k} {size}'] = lambda s=size, b=backend: b.detect(image, CONF, NMS, img_size=s)
        if args.peer.is_file():
            net = cv2.FaceDetectorYN.create(str(args.peer), '', (size, size), CONF, NMS, 5000)
            scale = size / max(image.shape[:2])
            small = cv2.resize(image, (round(image.shape[1] * scale), round(image.shape[0] * scale)))
            net.setInputSize((small.shape[1], small.shape[0]))
            out[f'yunet {size}'] = lambda n=net, im=image, sm=small.shape: n.detect(
                cv2.resize(im, (sm[1], sm[0]), interpolation=cv2.INTER_LINEAR))
        if args.torch:
            out[f'torch float {size}'] = torch_forward(args, image, size)
    numpy_default = Detector.load(args.model, backend='int', conf=CONF, nms=NMS)
    out['numpy default'] = lambda: numpy_default.detect_array(image)
    if backends:
        native_default = Detector.load(args.model, backend='native', conf=CONF, nms=NMS)
        out['native default'] = lambda: native_default.detect_array(image)
    return out


def kernel_sets(args: argparse.Namespace) -> list[str]:
    """The --kernels this machine runs (none without the native library)."""
    from ifq_tinier_yolo import native
    if not native.available():
        return []
    runs = ['auto'] + native.supported_kernels()
    return [k for k in args.kernels.split(',') if k in runs]


def torch_forward(args: argparse.Namespace, image, size: int):
    """The float PyTorch model of the same table: canvas -> tensor -> forward."""
    import torch

    from ifq_tinier_yolo.engine.preprocess import letterbox
    from ifq_tinier_yolo.model.predict import to_input
    from ifq_tinier_yolo.model.tinier_yolo import TinierYolo

    torch.set_num_threads(args.child)
    torch.set_grad_enabled(False)
    float_net = TinierYolo(quant='float').eval()   # the netdef table; random weights time the same
    canvas = letterbox(image, size)[0]
    return lambda: float_net(to_input([canvas]))


def child(args: argparse.Namespace) -> dict:
    """Time every contender in this process (thread limits already set); medians in ms."""
    import cv2
    import numpy as np

    from ifq_tinier_yolo.imageio import read_image

    cv2.setNumThreads(args.child)
    image = read_image(args.image) if args.image.is_file() else \
        np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    fns = contenders(args, image)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for i in range(WARMUP + args.runs):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            if i >= WARMUP:
                times[name].append((time.perf_counter() - t) * 1e3)
    from ifq_tinier_yolo import native
    names = [native.load(args.model, kernels=k).kernels for k in kernel_sets(args)]
    return {'ms': {name: float(np.median(v)) for name, v in times.items()}, 'kernels': kernel_sets(args), 'names': names}


def fmt(ms: dict[str, float], key: str) -> str:
    return f'{ms[key]:.1f}' if key in ms else '-'


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    cores = os.cpu_count() or 1
    counts = [cores if t.strip() == 'all' else int(t) for t in args.threads.split(',')]
    sizes = [int(s) for s in args.sizes.split(',')]
    print(f'one detection pass on {args.image.name} (letterbox, network, decode, NMS), median of {args.runs} '
          f'alternating runs, ms; the default detector rows run the native runtime on one thread')
    rows = []
    for n in dict.fromkeys(counts):
        env = dict(os.environ, **{v: str(n) for v in THREAD_VARS})
        cmd = [sys.executable, __file__, '--child', str(n), '--sizes', args.sizes, '--runs', str(args.runs),
               '--model', str(args.model), '--peer', str(args.peer), '--image', str(args.image),
               '--kernels', args.kernels]
        out = subprocess.run(cmd + (['--torch'] if args.torch else []), env=env, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        rows.append((n, json.loads(out.stdout.strip().splitlines()[-1])))
    kernels, names = rows[0][1]['kernels'], rows[0][1]['names']
    torch_col = ' torch float |' if args.torch else ''
    native_cols = ''.join(f' native ({n}) |' for n in names) or ' native (unavailable) |'
    print(f'\n| threads | input | numpy engine |{native_cols} YuNet | native / YuNet |{torch_col}')
    print('| --- | --- | --- |' + ' --- |' * max(1, len(names)) + ' --- | --- |' + (' --- |' if args.torch else ''))
    for n, r in rows:
        ms = r['ms']
        for s in sizes:
            first = f'native {kernels[0]} {s}' if kernels else ''
            ratio = f'{ms[first] / ms[f"yunet {s}"]:.2f}' if first in ms and f'yunet {s}' in ms else '-'
            cells = ''.join(f' {fmt(ms, f"native {k} {s}")} |' for k in kernels) or ' - |'
            extra = f' {fmt(ms, f"torch float {s}")} |' if args.torch else ''
            print(f'| {n} | {s} | {fmt(ms, f"numpy {s}")} |{cells} {fmt(ms, f"yunet {s}")} | {ratio} |{extra}')
    print('\n| threads | default detector (pyramid) numpy | native | YuNet at the largest size |')
    print('| --- | --- | --- | --- |')
    for n, r in rows:
        ms = r['ms']
        print(f'| {n} | {fmt(ms, "numpy default")} | {fmt(ms, "native default")} | {fmt(ms, f"yunet {max(sizes)}")} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
