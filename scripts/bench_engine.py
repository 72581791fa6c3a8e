"""Speed of the integer engine against the float PyTorch model of the same network, side by side.

    .venv/bin/python scripts/bench_engine.py [--model M.ifq] [--checkpoint C.pt] [--size 416]
                                             [--runs 30] [--threads 1,all]

For each thread count a child process (BLAS and torch limited to that many threads) times the
engine (`runtime.run` on a letterboxed uint8 canvas) and the float model (`quant='float'`,
canvas -> float tensor -> forward), alternating one run of each so that both see the same
machine load, and reports medians. Without --model / --checkpoint both use a random-weight
network of the netdef table (speed does not depend on the weights).
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
SAMPLE = ROOT.parent / 'shared' / 'data' / 'samples' / 'grace_hopper.jpg'
WARMUP = 3
THREAD_VARS = ('OMP_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument('--model', type=Path, default=None, help='.ifq model (default: convert --checkpoint or random)')
    p.add_argument('--checkpoint', type=Path, default=None, help='hwgq checkpoint for the float model weights')
    p.add_argument('--size', type=int, default=416, help='square input side in pixels')
    p.add_argument('--runs', type=int, default=30, help='timed runs per model (median reported)')
    p.add_argument('--threads', default='1,all', help='comma-separated thread counts; all = every core')
    p.add_argument('--child', type=int, default=0, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def child(args: argparse.Namespace) -> dict:
    """Time both models in this process (thread limits already set); returns medians in ms."""
    import numpy as np
    import torch

    from ifq_tinier_yolo.engine import runtime
    from ifq_tinier_yolo.engine.preprocess import letterbox
    from ifq_tinier_yolo.imageio import read_image
    from ifq_tinier_yolo.integrate.convert import convert, convert_model, random_quant_network
    from ifq_tinier_yolo.model.predict import to_input
    from ifq_tinier_yolo.model.tinier_yolo import TinierYolo

    torch.set_num_threads(args.child)
    torch.set_grad_enabled(False)
    if args.checkpoint:
        from ifq_tinier_yolo.checkpoint import load_checkpoint, model_from_checkpoint
        qnet = model_from_checkpoint(load_checkpoint(args.checkpoint), quant='hwgq', path=args.checkpoint)
    else:
        qnet = random_quant_network()
    if args.model:
        engine_model = runtime.load_model(args.model)
    elif args.checkpoint:
        engine_model = convert(args.checkpoint, img_size=args.size)
    else:
        engine_model = convert_model(qnet, args.size)
    float_net = TinierYolo(qnet.layers, qnet.anchors, 'float').eval()
    float_net.load_state_dict(qnet.state_dict())
    image = read_image(SAMPLE) if SAMPLE.is_file() else \
        np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    canvas = letterbox(image, args.size)[0]

    def engine() -> None:
        runtime.run(engine_model, canvas)

    def torch_float() -> None:
        float_net(to_input([canvas]))

    times: dict[str, list[float]] = {'engine': [], 'torch_float': []}
    for i in range(WARMUP + args.runs):
        for name, fn in (('engine', engine), ('torch_float', torch_float)):
            t = time.perf_counter()
            fn()
            if i >= WARMUP:
                times[name].append((time.perf_counter() - t) * 1e3)
    return {name: float(np.median(v)) for name, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    cores = os.cpu_count() or 1
    counts = [cores if t.strip() == 'all' else int(t) for t in args.threads.split(',')]
    print(f'bench {args.size}x{args.size}, median of {args.runs} alternating runs; engine = integer engine '
          f'(numpy), torch float = the float PyTorch model of the same layer table')
    for n in dict.fromkeys(counts):
        env = dict(os.environ, **{v: str(n) for v in THREAD_VARS})
        cmd = [sys.executable, __file__, '--child', str(n), '--size', str(args.size), '--runs', str(args.runs)]
        for flag, value in (('--model', args.model), ('--checkpoint', args.checkpoint)):
            if value:
                cmd += [flag, str(value)]
        out = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return out.returncode
        r = json.loads(out.stdout.strip().splitlines()[-1])
        e, f = r['engine'], r['torch_float']
        print(f'threads {n}: engine {e:.1f} ms/image ({1e3 / e:.1f} images/s) | torch float {f:.1f} ms/image '
              f'({1e3 / f:.1f} images/s) | engine speed / torch speed {f / e:.2f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
