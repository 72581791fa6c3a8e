"""Robustness: every bad input the table below lists, through `cli.main`, and batch commands that go on.

Each table row builds one bad (or unusual) input under tmp_path, runs one command, and checks
what the user sees (docs/ERRORS.md is the same table in prose):
- 'error': exit status 1, stderr is exactly one line `error: ...` naming the file (and line),
  nothing on stdout, and no file under tmp_path created or changed;
- 'skipped': a per-image failure in a batch command: exit status 1, one `skipped: ...` line
  naming the file, then the command's summary line; no output written for the bad image;
- 'ok': an unusual input that works: exit status 0 and the expected result on stdout.
stderr is captured at the file-descriptor level (capfd), so anything an image library prints
itself counts too. Models are random-weight networks: the detections are arbitrary.
"""
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
import scipy.io
import torch

from ifq_tinier_yolo.checkpoint import FORMAT, save_checkpoint
from ifq_tinier_yolo.cli import main
from ifq_tinier_yolo.engine import modelfile as fmt
from ifq_tinier_yolo.model.tinier_yolo import TinierYolo

FIXTURE_WIDER = Path(__file__).resolve().parent / 'fixtures' / 'wider'
ANN = '{t}/wider/wider_face_split/wider_face_train_bbx_gt.txt'
IMG_SIZE = '64'   # network input side for every detection here: milliseconds per image

pytestmark = pytest.mark.usefixtures('torch_one_thread')


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
    n_anchors = struct.unpack_from('<H', data, fmt.HEADER.size + 4)[0]
    at = fmt.HEADER.size + fmt.DESCRIPTION.size + 8 * n_anchors + fmt.NAME_BYTES
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


def cells(items: list) -> np.ndarray:
    out = np.empty((len(items), 1), dtype=object)
    for k, item in enumerate(items):
        out[k, 0] = item
    return out


def wider_gt(prediction: str):
    """Builder of t/gt (official .mat layout, one image '0--Parade/0_a') and t/pred/0--Parade/0_a.txt."""
    def build(t: Path, m: Models) -> None:
        (t / 'gt').mkdir()
        scipy.io.savemat(t / 'gt' / 'wider_face_val.mat', {
            'event_list': cells([np.array(['0--Parade'])]), 'file_list': cells([cells([np.array(['0_a'])])]),
            'face_bbx_list': cells([cells([np.array([[10, 10, 40, 40]], dtype=np.int32)])])})
        for setting in ('easy', 'medium', 'hard'):
            scipy.io.savemat(t / 'gt' / f'wider_{setting}_val.mat', {
                'gt_list': cells([cells([np.array([1], dtype=np.uint8).reshape(-1, 1)])])})
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


CASES: list[Case] = [
    # images
    Case('missing path', lambda t, m: None, detect('{t}/absent.jpg'), '{t}/absent.jpg: no such file or folder'),
    Case('zero-byte image', write('zero.jpg', b''), detect('{t}/zero.jpg'), '{t}/zero.jpg: empty file', 'skipped'),
    Case('truncated JPEG', write('cut.jpg', lambda: encoded('.jpg', noise((60, 80, 3)))[:3000]),
         detect('{t}/cut.jpg'), '{t}/cut.jpg: truncated JPEG file', 'skipped'),
    Case('truncated PNG', write('cut.png', lambda: encoded('.png', noise((60, 80, 3)))[:-20]),
         detect('{t}/cut.png'), '{t}/cut.png: truncated PNG file', 'skipped'),
    Case('PNG with damaged pixel data (CRC error)', write('crc.png', lambda: damaged('.png')),
         detect('{t}/crc.png'), '{t}/crc.png: not a readable image (libpng error', 'skipped'),
    Case('JPEG with damaged scan data (decodable)', write('bad.jpg', lambda: damaged('.jpg')),
         detect_plain('{t}/bad.jpg'), '"width": 80, "height": 60', 'ok'),
    Case('text file named .jpg', write('text.jpg', 'hello, I am text\n'), detect('{t}/text.jpg'),
         '{t}/text.jpg: not a readable image (corrupt, truncated or another format)', 'skipped'),
    Case('text file named .png', write('text.png', 'hello, I am text\n'), detect('{t}/text.png'),
         '{t}/text.png: not a readable image', 'skipped'),
    Case('PNG header claiming 40000x40000 pixels', write('huge.png', huge_png_header), detect('{t}/huge.png'),
         '{t}/huge.png: too large to decode', 'skipped'),
    Case('1x1 image', image('one.png', lambda: np.full((1, 1, 3), 128, np.uint8)), detect_plain('{t}/one.png'),
         '"width": 1, "height": 1, "faces": [', 'ok'),
    Case('10000x10000 image (shrunk to 8192 on read)', image('big.png', lambda: np.zeros((10000, 10000), np.uint8)),
         detect_plain('{t}/big.png'), '"width": 10000, "height": 10000, "faces": [', 'ok'),
    Case('grayscale PNG', image('gray.png', lambda: noise((30, 50))), detect_plain('{t}/gray.png'),
         '"width": 50, "height": 30', 'ok'),
    Case('RGBA PNG', image('rgba.png', lambda: noise((30, 50, 4))), detect_plain('{t}/rgba.png'),
         '"width": 50, "height": 30', 'ok'),
    Case('16-bit PNG', image('deep.png', lambda: noise((30, 50, 3), np.uint16, 65536)), detect_plain('{t}/deep.png'),
         '"width": 50, "height": 30', 'ok'),
    Case('16-bit grayscale PNG', image('gray16.png', lambda: noise((30, 50), np.uint16, 65536)),
         detect_plain('{t}/gray16.png'), '"width": 50, "height": 30', 'ok'),
    Case('image folder with no images', folder('docs', {'readme.txt': 'no images here'}), detect('{t}/docs'),
         '{t}/docs: no images in this folder or below'),
    Case('empty folder', folder('empty'), detect('{t}/empty'), '{t}/empty: no images in this folder or below'),
    Case('text file named .mp4', write('fake.mp4', 'not a video'), detect('{t}/fake.mp4'),
         '{t}/fake.mp4: cannot open as a video', 'skipped'),
    Case('--levels 0', A_JPG, detect('{t}/a.jpg', '--levels', '0'), 'levels 0 must be an integer from 1 to 4'),
    Case('--out under a file', both(A_JPG, write('file', 'x')),
         ('detect', '{t}/a.jpg', '--model', '{ifq}', '--img-size', IMG_SIZE, '--out', '{t}/file/ann'),
         '{t}/file'),
    Case('--skip-existing with a foreign JSON file',
         both(A_JPG, write('faces.jsonl', '{"image": "x.jpg"}\nnot json\n')),
         ('detect', '{t}/a.jpg', '--model', '{ifq}', '--json', '{t}/faces.jsonl', '--skip-existing'),
         '{t}/faces.jsonl:2: not a detect JSON record'),

    # WIDER FACE annotations (line numbers: 1 name, 2 count 4, 3-6 faces, 7 name, 8 count 7, ...)
    Case('WIDER face count too small', wider(set_line(1, '3')), STATS,
         ANN + ":6: expected an image path <event>/<file>.jpg (is the previous face count too small?)"),
    Case('WIDER face count too large', wider(set_line(1, '5')), STATS,
         ANN + ':7: expected face row 5 of 5'),
    Case('WIDER face count not an integer', wider(set_line(1, 'four')), STATS,
         ANN + ":2: expected the face count of 13--Interview/13_Interview_Interview_Sequences_13_929.jpg "
               "(one integer), found 'four'"),
    Case('WIDER non-integer face field', wider(set_line(2, '23 48 2x 27 0 0 0 0 0 0')), STATS,
         ANN + ":3: expected an integer w, found '2x'"),
    Case('WIDER fractional face field', wider(set_line(2, '23 48 21.5 27 0 0 0 0 0 0')), STATS,
         ANN + ":3: expected an integer w, found '21.5'"),
    Case('WIDER face row with 9 fields', wider(set_line(2, '23 48 21 27 0 0 0 0 0')), STATS,
         ANN + ':3: expected face row 1 of 4'),
    Case('WIDER negative face size', wider(set_line(2, '23 48 -21 27 0 0 0 0 0 0')), STATS,
         ANN + ':3: expected a non-negative face size w h, found -21 27'),
    Case('WIDER number beyond int32', wider(set_line(2, '99999999999999999999 48 21 27 0 0 0 0 0 0')), STATS,
         ANN + ":3: expected an integer x within +-2**31, found '99999999999999999999'"),
    Case('WIDER path outside the root', wider(set_line(0, '../../../etc/passwd.jpg')), STATS,
         ANN + ':1: expected an image path relative to the images folder'),
    Case('WIDER absolute path', wider(set_line(0, '/etc/passwd')), STATS,
         ANN + ':1: expected an image path relative to the images folder'),
    Case('WIDER control character in a path', wider(set_line(15, '13--Interview/no\x00face.jpg')), STATS,
         ANN + ":16: expected an image path of printable characters, found '13--Interview/no\\x00face.jpg'"),
    Case('WIDER missing image', wider(drop_image=WIDER_NAME), STATS,
         ANN + f':16: expected an existing image file {{t}}/wider/WIDER_train/images/{WIDER_NAME}, found no such file'),
    Case('WIDER truncated after a count', wider(cut_after(2)), STATS,
         ANN + ':2: expected face row 1 of 4'),
    Case('WIDER binary annotation file', both(wider(), write(ANN[4:], b'\x89PNG\r\n\x1a\n\x00\xff')), STATS,
         ANN + ': not a text annotation file'),
    Case('WIDER annotation file missing', lambda t, m: (t / 'wider').mkdir(), STATS,
         ANN + ': annotation file not found'),
    Case('WIDER bad annotation (wider predict)', wider(set_line(1, '3')),
         ('wider', 'predict', '--wider-root', '{t}/wider', '--split', 'train', '--out', '{t}/pred',
          '--model', '{ifq}', '--img-size', IMG_SIZE), ANN + ':6: expected an image path'),
    Case('WIDER CRLF line endings', wider(newline='\r\n'), STATS, 'images 3\nfaces 11\n', 'ok'),
    Case('WIDER UTF-8 byte-order mark', wider(bom=True), STATS, 'images 3\nfaces 11\n', 'ok'),
    Case('zero-byte image in the training set (data-loader worker)', wider(empty_image=WIDER_NAME),
         TRAIN[:-1] + ('1', '--out', '{t}/run'), '{t}/wider/WIDER_train/images/' + WIDER_NAME + ': empty file',
         logs=True),

    # FDDB (list.txt: a, b; ell.txt and det.txt: blocks a at line 1, b at line 4)
    Case('FDDB list and ellipse file disagree', fddb(ellipses=FDDB_ELLIPSES.replace('b\n', 'c\n')), FDDB_EVAL,
         "{t}/fddb/ell.txt:4: expected image 'b' ({t}/fddb/list.txt:2; blocks must follow the list order), found 'c'"),
    Case('FDDB ellipse file shorter than the list', fddb(ellipses='a\n1\n10 8 1.5 20 20  1\n'), FDDB_EVAL,
         "{t}/fddb/ell.txt:1: expected a block for image 'b' ({t}/fddb/list.txt:2) after this one, "
         "found the end of the annotations"),
    Case('FDDB detection file out of order', fddb(detections='b\n0\na\n1\n10 12 20 16 0.9\n'), FDDB_EVAL,
         "{t}/fddb/det.txt:1: expected image 'a' ({t}/fddb/list.txt:1; blocks must follow the list order), "
         "found 'b'"),
    Case('FDDB detection count too large', fddb(detections='a\n2\n10 12 20 16 0.9\nb\n0\n'), FDDB_EVAL,
         "{t}/fddb/det.txt:4: expected 5 numbers"),
    Case('FDDB rectangles read as ellipses', fddb(), FDDB_EVAL + ('--ellipse',),
         '{t}/fddb/det.txt:3: expected 6 numbers `ra rb angle cx cy score`'),
    Case('FDDB NaN score', fddb(detections=FDDB_RECTS.replace('0.9', 'nan')), FDDB_EVAL,
         "{t}/fddb/det.txt:3: expected a finite number for score"),
    Case('FDDB image missing', fddb(images=('a',)), FDDB_EVAL,
         "{t}/fddb/images/b.jpg: no such image file (image 'b' of {t}/fddb/list.txt:2"),
    Case('FDDB --out under a file', both(fddb(), write('file', 'x')), FDDB_EVAL[:-1] + ('{t}/file/r-',),
         '{t}/file/r-DiscROC.txt: cannot create its folder ({t}/file: '),
    Case('FDDB fold list with a space in a name', both(write('folds/FDDB-fold-01.txt', 'a\nb c\n'), folder('images')),
         ('fddb', 'detect', '--folds-dir', '{t}/folds', '--images', '{t}/images', '--out', '{t}/out',
          '--model', '{ifq}', '--img-size', IMG_SIZE),
         "{t}/folds/FDDB-fold-01.txt:2: expected one image name per line (names have no spaces), found 'b c'"),
    Case('FDDB files with CRLF line endings', fddb(newline='\r\n'), FDDB_EVAL, 'images 2\nfaces 2\n', 'ok'),

    # WIDER evaluation files
    Case('WIDER ground truth that is not a MATLAB file',
         both(wider_gt('0_a\n0\n'), write('gt/wider_face_val.mat', 'hello')), WIDER_EVAL,
         '{t}/gt/wider_face_val.mat: not a readable MATLAB file'),
    Case('WIDER prediction file with a wrong count', wider_gt('0_a\n3\n10 10 40 40 0.9\n'), WIDER_EVAL,
         '{t}/pred/0--Parade/0_a.txt:2: expected 3 box lines after the count, found 1'),

    # model files (.ifq), each through detect and report
    *model_cases('model file truncated', model_file(lambda d: d[:len(d) // 2]),
                 '{t}/m.ifq: truncated ('),
    *model_cases('model file with one bit flipped', model_file(flip_bit), '{t}/m.ifq: corrupted (CRC-32 mismatch)'),
    *model_cases('model file with a wrong magic', model_file(lambda d: b'NOTAMODL' + d[8:]),
                 '{t}/m.ifq: not an .ifq model file (wrong magic bytes)'),
    *model_cases('model file of a newer format version', model_file(newer_version),
                 '{t}/m.ifq: format version 2 is newer than this program reads (1)'),
    *model_cases('model file of zero bytes', model_file(lambda d: b''), '{t}/m.ifq: empty file (0 bytes)'),
    *model_cases('model file with a valid CRC but a bad layer table', model_file(bad_kind_with_valid_crc),
                 '{t}/m.ifq: layer conv1: malformed table row (kind 9'),
    *model_cases('checkpoint renamed to .ifq', lambda t, m: shutil.copy(m.pt, t / 'm.ifq'),
                 '{t}/m.ifq: not an .ifq model file (wrong magic bytes)'),
    Case('model file missing', lambda t, m: None, ('report', '--model', '{t}/absent.ifq'),
         '{t}/absent.ifq: no such model file'),
    Case('model of an unknown type', A_JPG,
         ('detect', '{t}/a.jpg', '--model', '{t}/a.jpg'), "{t}/a.jpg: unknown model file type '.jpg'"),

    # checkpoints that are not ours
    Case('foreign checkpoint (detect --backend torch)', both(A_JPG, torch_file('x.pt', foreign_state)),
         DETECT_TORCH, '{t}/x.pt: not an ifq-tinier-yolo checkpoint'),
    Case('foreign checkpoint (convert)', torch_file('x.pt', foreign_state), CONVERT,
         '{t}/x.pt: not an ifq-tinier-yolo checkpoint'),
    Case('foreign last.pt (train --resume)', both(wider(), torch_file('run/last.pt', foreign_state)),
         TRAIN + ('--out', '{t}/run', '--resume'), '{t}/run/last.pt: not an ifq-tinier-yolo checkpoint'),
    Case('foreign checkpoint (train --init)', both(wider(), torch_file('x.pt', foreign_state)),
         TRAIN + ('--out', '{t}/run', '--init', '{t}/x.pt'), '{t}/x.pt: not an ifq-tinier-yolo checkpoint'),
    Case('pickled module as checkpoint (convert)', torch_file('x.pt', lambda: torch.nn.Linear(2, 2)),
         CONVERT,
         '{t}/x.pt: not a plain checkpoint: it holds a torch.nn.modules.linear.Linear object'),
    Case('text file as checkpoint (convert)', write('x.pt', 'hello\n'), CONVERT,
         '{t}/x.pt: not a PyTorch checkpoint (neither a zip archive nor a pickle)'),
    Case('truncated checkpoint (convert)', checkpoint_file('x.pt', lambda d: d[:len(d) // 2]),
         CONVERT, '{t}/x.pt: damaged checkpoint archive (truncated'),
    Case('checkpoint with one bit flipped (detect --backend torch)', both(A_JPG, checkpoint_file('x.pt', flip_bit)),
         DETECT_TORCH, '{t}/x.pt: damaged checkpoint'),
    Case('checkpoint of a newer version (convert)', torch_file('x.pt', lambda: {'format': FORMAT, 'version': 3}),
         CONVERT, '{t}/x.pt: checkpoint version 3, this program reads 1, 2'),
    Case('float checkpoint (convert)', our_checkpoint('x.pt', quant='float'), CONVERT,
         "{t}/x.pt: trained with quant='float'; convert needs a hwgq network"),
    Case('convert --out under a file', write('file', 'x'), ('convert', '{pt}', '--out', '{t}/file/x.ifq'),
         '{t}/file/x.ifq: cannot create its folder ({t}/file: '),
    Case('train --out is a file', both(wider(), write('file', 'x')), TRAIN + ('--out', '{t}/file'), '{t}/file'),
    Case('weights-only checkpoint as last.pt (train --resume)', both(wider(), our_checkpoint('run/last.pt')),
         TRAIN + ('--out', '{t}/run', '--resume'),
         '{t}/run/last.pt: holds no resume state (optimizer, epoch, step, best missing); use --init to start from it'),
]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime_ns) of every file under root, by relative path."""
    return {p.relative_to(root).as_posix(): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob('*') if p.is_file()}


def fill(text: str, t: Path, m: Models) -> str:
    return text.replace('{t}', str(t)).replace('{pt}', str(m.pt)).replace('{ifq}', str(m.ifq))


@pytest.mark.parametrize('case', CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, models: Models, capfd: pytest.CaptureFixture):
    case.build(tmp_path, models)
    before = snapshot(tmp_path)
    argv = [fill(a, tmp_path, models) for a in case.argv]
    expect = fill(case.expect, tmp_path, models)
    rc = main(argv)
    out, err = capfd.readouterr()
    lines = err.splitlines()
    assert 'Traceback' not in err
    if case.outcome == 'ok':
        assert rc == 0, err
        assert expect in out
        assert not any(line.startswith(('error:', 'skipped:')) for line in lines), err
        return
    assert rc == 1, (out, err)
    if case.outcome == 'error':
        errors = [line for line in lines if line.startswith('error: ')]
        assert len(errors) == 1 and (lines == errors or case.logs and lines[-1] == errors[0]), err
        assert expect in errors[0], err
        assert out == ''
    else:   # skipped: one line for the bad input, then the summary
        assert len(lines) == 2 and lines[0].startswith('skipped: ') and expect in lines[0], err
        assert lines[1].startswith('detect: 0 images, 0 faces, 1 failures'), err
        assert out == ''
    assert snapshot(tmp_path) == before   # nothing written, half-way or whole


def test_the_table_covers_the_issue():
    """The inputs issue 8 names are all in the table (the README lists the same rows)."""
    names = ' | '.join(c.name for c in CASES)
    for words in ('missing path', 'zero-byte image', 'truncated JPEG', 'text file named .jpg', '1x1 image',
                  '10000x10000 image', 'grayscale PNG', 'RGBA PNG', '16-bit PNG', 'image folder with no images',
                  'WIDER face count too small', 'WIDER non-integer', 'WIDER negative face size',
                  'WIDER path outside the root', 'WIDER missing image', 'WIDER CRLF',
                  'FDDB list and ellipse file disagree', 'FDDB detection file out of order',
                  'model file truncated (detect)', 'model file truncated (report)', 'one bit flipped (detect)',
                  'one bit flipped (report)', 'wrong magic (detect)', 'wrong magic (report)',
                  'newer format version (detect)', 'newer format version (report)', 'zero bytes (detect)',
                  'zero bytes (report)', 'foreign checkpoint (detect --backend torch)', 'foreign checkpoint (convert)',
                  'foreign last.pt (train --resume)', 'foreign checkpoint (train --init)'):
        assert words in names, words
    assert len({c.name for c in CASES}) == len(CASES)


# --- batch commands: go on past a bad image, then fill in only what is missing ----------------------

def mtimes(paths: list[Path]) -> list[int]:
    return [p.stat().st_mtime_ns for p in paths]


def no_temp_files(root: Path) -> bool:
    return not [p for p in root.rglob('*') if p.name.endswith('.tmp')]


def test_detect_folder_goes_on_and_skip_existing_fills_in(tmp_path: Path, models: Models, capfd):
    src, ann, jsonl = tmp_path / 'in', tmp_path / 'ann', tmp_path / 'faces.jsonl'
    good = ['a.jpg', 'b.png', 'sub/e.png']
    for k, name in enumerate(good):
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(encoded(Path(name).suffix, noise((30 + 8 * k, 40, 3), seed=k)))
    (src / 'c.jpg').write_bytes(b'')
    (src / 'd.jpg').write_bytes(encoded('.jpg', noise((30, 40, 3)))[:500])
    argv = ['detect', str(src), '--out', str(ann), '--json', str(jsonl), '--model', str(models.ifq),
            '--img-size', IMG_SIZE]
    assert main(argv) == 1
    err = capfd.readouterr().err.splitlines()
    assert err == [f'skipped: {src / "c.jpg"}: empty file', f'skipped: {src / "d.jpg"}: truncated JPEG file '
                   f'(its end is missing)', err[-1]]
    assert err[-1].startswith('detect: 3 images, ') and ', 2 failures, ' in err[-1]
    assert sorted(p.relative_to(ann).as_posix() for p in ann.rglob('*') if p.is_file()) == sorted(good)
    first = jsonl.read_text()
    assert [line.split('"')[3] for line in first.splitlines()] == [str(src / n) for n in sorted(good)]
    assert no_temp_files(tmp_path)

    (ann / 'b.png').unlink()
    kept = [ann / 'a.jpg', ann / 'sub' / 'e.png']
    kept_times = mtimes(kept)
    assert main(argv + ['--skip-existing']) == 1   # the two bad files fail again
    err = capfd.readouterr().err.splitlines()
    assert err[-1].startswith('detect: 1 images, ') and '2 skipped (done before)' in err[-1]
    assert (ann / 'b.png').is_file() and mtimes(kept) == kept_times
    assert jsonl.read_text() == first
    assert no_temp_files(tmp_path)


def test_fddb_detect_goes_on_and_skip_existing_fills_in(tmp_path: Path, models: Models, capfd):
    folds, images, out = tmp_path / 'folds', tmp_path / 'images', tmp_path / 'out'
    folds.mkdir()
    (folds / 'FDDB-fold-01.txt').write_text('2002/a\n2002/bad\n2002/b\n')
    (folds / 'FDDB-fold-02.txt').write_text('2003/c\n')
    (images / '2002').mkdir(parents=True)
    (images / '2003').mkdir()
    for k, name in enumerate(('2002/a', '2002/b', '2003/c')):
        (images / f'{name}.jpg').write_bytes(encoded('.jpg', noise((40, 48, 3), seed=k)))
    (images / '2002' / 'bad.jpg').write_text('not a jpeg')
    argv = ['fddb', 'detect', '--folds-dir', str(folds), '--images', str(images), '--out', str(out),
            '--model', str(models.ifq), '--img-size', IMG_SIZE, '--conf', '0.3']
    assert main(argv) == 1
    err = capfd.readouterr().err
    assert f'skipped: {images / "2002" / "bad.jpg"}: not a readable image' in err and 'Traceback' not in err
    assert 'fold 01: 3 images, ' in err and '1 failures' in err
    fold1, fold2 = out / 'fold-01-out.txt', out / 'fold-02-out.txt'
    lines = fold1.read_text().splitlines()
    names = [line for line in lines if line.startswith('2002/')]
    assert names == ['2002/a', '2002/bad', '2002/b'] and lines[lines.index('2002/bad') + 1] == '0'
    second = fold2.read_text()
    assert second.startswith('2003/c\n')
    assert no_temp_files(tmp_path)

    fold2.unlink()
    kept = mtimes([fold1])
    assert main(argv + ['--skip-existing']) == 0   # fold 01 (with the bad image) is kept, not redone
    err = capfd.readouterr().err
    assert f'fold 01: kept {fold1}' in err
    assert mtimes([fold1]) == kept and fold2.read_text() == second


def test_wider_predict_goes_on_and_skip_existing_fills_in(tmp_path: Path, models: Models, capfd):
    root = tmp_path / 'wider'
    shutil.copytree(FIXTURE_WIDER, root)
    (root / 'WIDER_train' / 'images' / WIDER_NAME).write_bytes(b'')
    pred = tmp_path / 'pred'
    argv = ['wider', 'predict', '--wider-root', str(root), '--split', 'train', '--out', str(pred),
            '--model', str(models.ifq), '--img-size', IMG_SIZE]
    assert main(argv) == 1
    err = capfd.readouterr().err
    assert f'skipped: {root / "WIDER_train" / "images" / WIDER_NAME}: empty file' in err
    assert 'wider predict: 3 images, ' in err and '1 failures' in err
    event = pred / '13--Interview'
    written = sorted(p.name for p in event.iterdir())
    assert written == ['13_Interview_Interview_On_Location_13_138.txt', '13_Interview_Interview_Sequences_13_929.txt']
    assert no_temp_files(tmp_path)

    redo, keep = event / written[0], event / written[1]
    content = redo.read_text()
    redo.unlink()
    kept = mtimes([keep])
    assert main(argv + ['--skip-existing']) == 1   # the empty image fails again
    err = capfd.readouterr().err
    assert '1 kept from before' in err and '1 failures' in err
    assert redo.read_text() == content and mtimes([keep]) == kept
    assert sorted(p.name for p in event.iterdir()) == written
