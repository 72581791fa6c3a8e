"""`detect`: faces in image files, image folders (recursive) and video files.

Outputs: JSON lines (docs/JSON_OUTPUT.md) on stdout or in a file, and annotated copies under
`--out`. A bad input file is reported on one stderr line and skipped; the exit status is 1 at
the end if any input failed. Every output file is written atomically.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import ConfigError, DataError, ImageError
from ..fileio import atomic_open, atomic_write_text, output_errors
from ..imageio import IMAGE_EXTENSIONS, captured_stderr, read_image_sized
from .detector import Detector, scale_boxes
from .draw import VIDEO_CODECS, AtomicVideoWriter, draw_faces

VIDEO_EXTENSIONS = ('.mp4', '.avi', '.mov', '.mkv', '.webm')
GRAY_ONLY_EXTENSIONS = ('.pgm',)    # annotated copies of these are written as .png (colour boxes)
COORD_DECIMALS = 2                  # JSON box coordinates, pixels
SCORE_DECIMALS = 4                  # JSON scores


@dataclass(frozen=True)
class Source:
    """One input: its path, the path of its annotated copy (None without --out), and whether it is a video."""
    path: Path
    out: Path | None
    video: bool


def detector_from_args(args: argparse.Namespace) -> Detector:
    """The Detector named by the shared detection flags (--model, --backend, --conf, --nms, --img-size,
    --levels, --flip, --upscale); says on stderr when the native runtime cannot run the model."""
    detector = Detector.load(args.model, args.backend, args.conf, args.nms, args.img_size, args.levels, args.flip,
                             args.upscale)
    if detector.notice:
        print(detector.notice, file=sys.stderr)
    return detector


def _annotated_name(rel: Path, video: bool) -> Path:
    """Name of the annotated copy: the input's own name, or .avi / .png where OpenCV cannot write its type."""
    suffix = rel.suffix.lower()
    if video:
        return rel if suffix in VIDEO_CODECS else rel.with_suffix('.avi')
    return rel if suffix in IMAGE_EXTENSIONS and suffix not in GRAY_ONLY_EXTENSIONS else rel.with_suffix('.png')


def collect_sources(paths: list[Path], out_dir: Path | None) -> list[Source]:
    """Files as given, folders expanded to their images (recursive, sorted).

    Raises ImageError for a missing path or a folder without images, ConfigError when two
    inputs would get the same annotated copy or the output folder is (or holds) an input folder.
    """
    out_root = out_dir.resolve() if out_dir is not None else None
    found: list[tuple[Path, Path]] = []   # (input path, path relative to the output folder)
    for p in paths:
        if p.is_dir():
            if out_root is not None and p.resolve().is_relative_to(out_root):
                raise ConfigError(f'--out {out_dir}: holds the input folder {p}: the annotated copies would '
                                  f'overwrite or mix with the images; choose another output folder')
            # skip earlier annotated copies when --out lies inside the folder
            files = sorted(f for f in p.rglob('*') if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()
                           and not (out_root and f.resolve().is_relative_to(out_root)))
            if not files:
                raise ImageError(f'{p}: no images in this folder or below '
                                 f'(looked for {" ".join(IMAGE_EXTENSIONS)})')
            found += [(f, f.relative_to(p)) for f in files]
        elif p.exists():
            found.append((p, Path(p.name)))
        else:
            raise ImageError(f'{p}: no such file or folder')
    sources, seen, outs = [], set(), {}
    for path, rel in found:
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        video = path.suffix.lower() in VIDEO_EXTENSIONS
        out = out_dir / _annotated_name(rel, video) if out_dir is not None else None
        if out is not None and out in outs:
            raise ConfigError(f'{outs[out]} and {path} would both be annotated as {out}: run them separately')
        outs[out] = path
        sources.append(Source(path, out, video))
    return sources


def record(path: Path, size: tuple[int, int], boxes: np.ndarray, frame: int | None = None) -> dict[str, Any]:
    """One JSON line: image path, [frame index], width, height, faces from float (N, 5) x, y, w, h, score."""
    def num(v: float, decimals: int) -> float:
        return round(float(v), decimals) + 0.0   # + 0.0 turns -0.0 into 0.0
    rec: dict[str, Any] = {'image': str(path)}
    if frame is not None:
        rec['frame'] = frame
    rec.update(width=int(size[0]), height=int(size[1]), faces=[
        {'x': num(x, COORD_DECIMALS), 'y': num(y, COORD_DECIMALS), 'w': num(w, COORD_DECIMALS),
         'h': num(h, COORD_DECIMALS), 'score': num(s, SCORE_DECIMALS)} for x, y, w, h, s in boxes])
    return rec


def read_records(path: Path) -> dict[str, list[dict[str, Any]]]:
    """Records of an earlier --json FILE grouped by "image" (for --skip-existing); DataError names a bad line."""
    try:
        text = path.read_text(encoding='utf-8')
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f'{path}: cannot read earlier results ({e})') from None
    by_image: dict[str, list[dict[str, Any]]] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            key = rec['image']
            if not isinstance(key, str):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise DataError(f'{path}:{number}: not a detect JSON record (remove the file or run without '
                            f'--skip-existing)') from None
        by_image.setdefault(key, []).append(rec)
    return by_image


class Sink:
    """Where records go: streamed to stdout ('-'), or kept for one atomic write of FILE at the end."""

    def __init__(self, target: str | None):
        self.target = target            # '-', a file name, or None (no JSON)
        self.records: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []   # records of the input in progress

    def emit(self, rec: dict[str, Any]) -> None:
        if self.target == '-':
            print(json.dumps(rec), flush=True)
        elif self.target is not None:
            self._pending.append(rec)

    def end_source(self, ok: bool) -> None:
        """Keep the records of a finished input, drop those of a failed one."""
        if ok:
            self.records += self._pending
        self._pending = []

    def close(self) -> None:
        """Write FILE (whole records only, so an interrupted run can be resumed with --skip-existing)."""
        if self.target not in (None, '-'):
            write_text(Path(self.target), ''.join(json.dumps(r) + '\n' for r in self.records))


def open_capture(source: int | Path) -> cv2.VideoCapture:
    """cv2.VideoCapture of a camera index or a video file, opened quietly (check isOpened).

    What OpenCV and FFmpeg print about a file they cannot open is dropped: the caller reports it.
    """
    with captured_stderr():
        return cv2.VideoCapture(source if isinstance(source, int) else str(source))


def write_text(path: Path, text: str) -> None:
    """atomic_write_text, with an OutputError naming the file when it cannot be written."""
    with output_errors(path):
        atomic_write_text(path, text)


def write_image(path: Path, image: np.ndarray) -> None:
    """Encode uint8 BGR by the suffix of `path` and write it atomically."""
    ok, buf = cv2.imencode(path.suffix, image)
    if not ok:
        raise ImageError(f'{path}: OpenCV cannot encode {path.suffix} images')
    with output_errors(path), atomic_open(path, 'wb') as f:
        f.write(buf.tobytes())


def detect_image(detector: Detector, src: Source, sink: Sink) -> int:
    """Detect on one image file, emit its record, write its annotated copy; returns the face count."""
    image, size = read_image_sized(src.path)
    boxes = detector.detect_array(image)   # (N, 5) in the pixels of `image` (shrunk if over MAX_SIDE)
    if src.out is not None:
        write_image(src.out, draw_faces(image, boxes))
    sink.emit(record(src.path, size, scale_boxes(boxes, (image.shape[1], image.shape[0]), size)))
    return len(boxes)


def detect_video(detector: Detector, src: Source, sink: Sink, bar: bool) -> tuple[int, int]:
    """Detect on every frame of a video file; returns (frames, faces). ImageError if no frame can be read."""
    cap = open_capture(src.path)
    try:
        if not cap.isOpened():
            raise ImageError(f'{src.path}: cannot open as a video (not a video, or a codec OpenCV lacks)')
        writer = AtomicVideoWriter(src.out, cap.get(cv2.CAP_PROP_FPS)) if src.out is not None else None
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        frames = faces = 0
        with writer or nullcontext(), tqdm(total=total, unit='frame', leave=False, disable=not bar,
                                           file=sys.stderr, desc=src.path.name) as frame_bar:
            while True:
                ok, frame = cap.read()
                if not ok:
                    break
                boxes = detector.detect_array(frame)
                sink.emit(record(src.path, (frame.shape[1], frame.shape[0]), boxes, frame=frames))
                if writer is not None:
                    writer.write(draw_faces(frame, boxes))
                frames, faces = frames + 1, faces + len(boxes)
                frame_bar.update()
            if frames == 0:
                raise ImageError(f'{src.path}: no frame could be read (empty, truncated or unsupported video)')
    finally:
        cap.release()
    return frames, faces


def cli_detect(args: argparse.Namespace) -> int:
    """`detect`: returns 0, or 1 when any input failed (each failure named on stderr)."""
    if args.out is not None and args.out.exists() and not args.out.is_dir():
        raise ConfigError(f'--out {args.out}: exists and is not a folder')
    # without --json and --out the results still go somewhere: JSON lines on stdout
    target = args.json if args.json is not None or args.out is not None else '-'
    sources = collect_sources(args.sources, args.out)
    prior: dict[str, list[dict[str, Any]]] = {}
    if args.skip_existing and target not in (None, '-') and Path(target).is_file():
        prior = read_records(Path(target))
    detector = detector_from_args(args)
    sink = Sink(target)
    on_tty = sys.stderr.isatty()
    images = faces = skipped = 0
    failures: list[Path] = []
    interrupted = False
    start = time.perf_counter()
    try:
        for src in tqdm(sources, unit='file', file=sys.stderr, disable=not (on_tty and len(sources) > 1)):
            # an input is done when each output it would get exists (stdout never counts as existing)
            if args.skip_existing and (src.out is None or src.out.exists()) and (
                    target is None or str(src.path) in prior):
                sink.records += prior.get(str(src.path), [])
                skipped += 1
                continue
            try:
                if src.video:
                    n_images, n_faces = detect_video(detector, src, sink, on_tty)
                else:
                    n_images, n_faces = 1, detect_image(detector, src, sink)
            except ImageError as e:
                sink.end_source(ok=False)
                failures.append(src.path)
                tqdm.write(f'skipped: {e}', file=sys.stderr)
                continue
            sink.end_source(ok=True)
            images, faces = images + n_images, faces + n_faces
    except KeyboardInterrupt:
        interrupted = True   # still write the finished records below, then stop
    sink.close()
    rate = images / max(time.perf_counter() - start, 1e-9)
    done_before = f', {skipped} skipped (done before)' if skipped else ''
    print(f'detect: {images} images, {faces} faces, {len(failures)} failures, {rate:.1f} images/s{done_before}',
          file=sys.stderr)
    if interrupted:
        raise KeyboardInterrupt
    return 1 if failures else 0
