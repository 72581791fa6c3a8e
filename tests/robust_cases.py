"""The builders and row type of the robustness table (test_robust.py) and the batch checks
(test_robust_batch.py): each builder makes one bad (or unusual) input under a test's tmp_path."""
from __future__ import annotations

import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import cv2
import numpy as np
import pytest
import torch

from ifq_tinier_yolo.checkpoint import save_checkpoint
from ifq_tinier_yolo.engine import modelfile as fmt
from ifq_tinier_yolo.model.tinier_yolo import TinierYolo

from wider_gt_files import write_ground_truth

FIXTURE_WIDER = Path(__file__).resolve().parent / 'fixtures' / 'wider'
ANN = '{t}/wider/wider_face_split/wider_face_train_bbx_gt.txt'
IMG_SIZE = '64'   # network input side for every detection here: milliseconds per image


class Models(NamedTuple):
    pt: Path    # random-weight hwgq checkpoint
    ifq: Path   # the same network converted to an integer model


@pytest.fixture(scope='module')
def models(random_checkpoint: Path, random_ifq: Path) -> Models:
    return Models(random_checkpoint, random_ifq)


# --- builders: each makes the input of one row under t ----------------------------------------

def noise(shape: tuple[int, ...], dtype=np.uint8, high: int = 256, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, shape).astype(dtype)


def encoded(ext: str, image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(ext, image)
    assert ok
    return buf.tobytes()


def write(name: str, data: bytes | str | Callable[[], bytes]):
    """Builder writing one file t/name (bytes, text, or bytes made when the row runs)."""
    def build(t: Path, m: Models) -> None:
        path = t / name
        path.parent.mkdir(parents=True, exist_ok=True)
        content = data() if callable(data) else data
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    return build


def image(name: str, array: Callable[[], np.ndarray]):
    """Builder encoding an image t/name by its suffix."""
    return write(name, lambda: encoded(Path(name).suffix, array()))


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))


def huge_png_header() -> bytes:
    """A small PNG file whose header claims 40000 x 40000 pixels (over OpenCV's 2**30 limit)."""
    ihdr = struct.pack('>IIBBBBB', 40000, 40000, 8, 0, 0, 0, 0)
    return (b'\x89PNG\r\n\x1a\n' + png_chunk(b'IHDR', ihdr) + png_chunk(b'IDAT', zlib.compress(b'\0' * 64))
            + png_chunk(b'IEND', b''))


def corrupt(data: bytes, at: float, xor: int = 0x55, n: int = 3) -> bytes:
    """data with n bytes from fraction `at` of its length xor-ed."""
    out = bytearray(data)
    i = int(len(out) * at)
    for k in range(i, i + n):
        out[k] ^= xor
    return bytes(out)


def damaged(ext: str) -> bytes:
    """A 80x60 noise image encoded as `ext`, three bytes in its middle xor-ed."""
    return corrupt(encoded(ext, noise((60, 80, 3))), 0.5)


def folder(name: str, files: dict[str, str] | None = None):
    def build(t: Path, m: Models) -> None:
        (t / name).mkdir()
        for fname, text in (files or {}).items():
            (t / name / fname).write_text(text)
    return build


def both(*builders):
    def build(t: Path, m: Models) -> None:
        for b in builders:
            b(t, m)
    return build


def wider(edit: Callable[[list[str]], list[str]] | None = None, newline: str = '\n', bom: bool = False,
          drop_image: str | None = None, empty_image: str | None = None):
    """Builder copying the 3-image WIDER fixture to t/wider, editing its annotation lines (numbered from 0)."""
    def build(t: Path, m: Models) -> None:
        root = t / 'wider'
        shutil.copytree(FIXTURE_WIDER, root)
        ann = Path(ANN.format(t=t))
        lines = [line.rstrip() for line in ann.read_text().splitlines()]
        lines = edit(lines) if edit else lines
        ann.write_bytes(('\ufeff' if bom else '').encode() + (newline.join(lines) + newline).encode())
        if drop_image:
            (root / 'WIDER_train' / 'images' / drop_image).unlink()
        if empty_image:
            (root / 'WIDER_train' / 'images' / empty_image).write_bytes(b'')
    return build


def set_line(k: int, text: str):
    return lambda lines: lines[:k] + [text] + lines[k + 1:]


def cut_after(k: int):
    return lambda lines: lines[:k]


FDDB_LIST = 'a\nb\n'
FDDB_ELLIPSES = 'a\n1\n10 8 1.5 20 20  1\nb\n1\n9 7 1.5 18 22  1\n'
FDDB_RECTS = 'a\n1\n10 12 20 16 0.9\nb\n1\n8 10 18 18 0.8\n'


def fddb(ellipses: str = FDDB_ELLIPSES, detections: str = FDDB_RECTS, names: str = FDDB_LIST,
         newline: str = '\n', images: tuple[str, ...] = ('a', 'b')):
    """Builder of t/fddb: list.txt, ell.txt (annotations), det.txt (detections), images/<name>.jpg."""
    def build(t: Path, m: Models) -> None:
        root = t / 'fddb'
        (root / 'images').mkdir(parents=True)
        for name, text in (('list.txt', names), ('ell.txt', ellipses), ('det.txt', detections)):
            (root / name).write_bytes(text.replace('\n', newline).encode())
        for k, name in enumerate(images):
            (root / 'images' / f'{name}.jpg').write_bytes(encoded('.jpg', noise((40, 40, 3), seed=k)))
    return build


def model_file(mutate: Callable[[bytes], bytes], name: str = 'm.ifq'):
    """Builder of t/name: the random integer model's bytes, changed by `mutate`."""
    def build(t: Path, m: Models) -> None:
        (t / name).write_bytes(mutate(m.ifq.read_bytes()))
    return build


def flip_bit(data: bytes) -> bytes:
    return corrupt(data, 0.5, xor=0x10, n=1)


def newer_version(data: bytes) -> bytes:
    return data[:8] + struct.pack('<H', fmt.VERSION + 1) + data[10:]


def bad_kind_with_valid_crc(data: bytes) -> bytes:
    """Layer 0's kind byte set to 9, the CRC recomputed: only the structural checks can catch it."""
    at = fmt.HEADER.size + fmt.DESCRIPTION.size + fmt.NAME_BYTES    # version 2: the table follows the description
    body = bytearray(data[:-fmt.CRC.size])
    body[at] = 9
    return bytes(body) + fmt.CRC.pack(zlib.crc32(bytes(body)))


def torch_file(name: str, obj: Callable[[], object]):
    def build(t: Path, m: Models) -> None:
        (t / name).parent.mkdir(parents=True, exist_ok=True)
        torch.save(obj(), t / name)
    return build


def checkpoint_file(name: str, mutate: Callable[[bytes], bytes]):
    def build(t: Path, m: Models) -> None:
        (t / name).write_bytes(mutate(m.pt.read_bytes()))
    return build


def our_checkpoint(name: str, quant: str = 'hwgq', **extra):
    def build(t: Path, m: Models) -> None:
        torch.manual_seed(0)
        save_checkpoint(t / name, TinierYolo(quant=quant).eval(), 64, {}, **extra)
    return build


def foreign_state() -> dict:
    return {'state_dict': {'conv.weight': torch.zeros(2, 2)}, 'epoch': 3}


def wider_gt(prediction: str):
    """Builder of t/gt (official .mat layout, one image '0--Parade/0_a') and t/pred/0--Parade/0_a.txt."""
    def build(t: Path, m: Models) -> None:
        write_ground_truth(t / 'gt', '0--Parade', {'0_a': [[10, 10, 40, 40]]},
                           {setting: [[1]] for setting in ('easy', 'medium', 'hard')})
        (t / 'pred' / '0--Parade').mkdir(parents=True)
        (t / 'pred' / '0--Parade' / '0_a.txt').write_text(prediction)
    return build


# --- the table ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[Path, Models], None]
    argv: tuple[str, ...]       # '{t}' -> tmp_path, '{pt}' / '{ifq}' -> the random models
    expect: str                 # substring of the error / skipped line, or of stdout for 'ok' ('{t}' formatted)
    outcome: str = 'error'      # 'error', 'skipped' or 'ok'
    logs: bool = False          # log lines may precede the error (a command that had started working)


def detect(src: str, *extra: str) -> tuple[str, ...]:
    """`detect SRC` on the integer engine, JSON lines on stdout, annotated copies in t/ann."""
    return ('detect', src, '--model', '{ifq}', '--img-size', IMG_SIZE, '--json', '-', '--out', '{t}/ann', *extra)


def detect_plain(src: str) -> tuple[str, ...]:
    """`detect SRC` on the integer engine with JSON lines on stdout only (for inputs that succeed)."""
    return ('detect', src, '--model', '{ifq}', '--img-size', IMG_SIZE, '--json', '-')


STATS = ('data', 'stats', '--wider-root', '{t}/wider', '--split', 'train')
FDDB_EVAL = ('fddb', 'eval', '--annotations', '{t}/fddb/ell.txt', '--detections', '{t}/fddb/det.txt',
             '--list', '{t}/fddb/list.txt', '--images', '{t}/fddb/images', '--out', '{t}/fddb/roc/r-')
TRAIN = ('train', '--wider-root', '{t}/wider', '--epochs', '1', '--batch', '1', '--img-size', IMG_SIZE,
         '--no-val', '--workers', '0')
WIDER_EVAL = ('wider', 'eval', '--pred', '{t}/pred', '--gt', '{t}/gt')
CONVERT = ('convert', '{t}/x.pt', '--out', '{t}/x.ifq')
DETECT_TORCH = ('detect', '{t}/a.jpg', '--backend', 'torch', '--model', '{t}/x.pt')
WIDER_NAME = '13--Interview/no_face_crop.jpg'


A_JPG = image('a.jpg', lambda: noise((20, 20, 3)))


def model_cases(label: str, build, expect: str) -> list[Case]:
    """The same damaged model file through `detect --model` and `report --model`."""
    return [Case(f'{label} (detect)', both(A_JPG, build),
                 ('detect', '{t}/a.jpg', '--model', '{t}/m.ifq'), expect),
            Case(f'{label} (report)', build, ('report', '--model', '{t}/m.ifq'), expect)]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under root, by relative path."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob('*') if p.is_file()}


def fill(text: str, t: Path, m: Models) -> str:
    return text.replace('{t}', str(t)).replace('{pt}', str(m.pt)).replace('{ifq}', str(m.ifq))

