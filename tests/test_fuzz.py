"""Property tests (hypothesis): random bytes and mutated valid files never crash the parsers.

Targets: the WIDER annotation reader, the FDDB fold-list / ellipse / detection readers (and the
evaluation that consumes what they accept), the WIDER prediction-file reader, the image reader,
and the `.ifq` model loader (and the engine on any model it accepts). The only exception
allowed out of them is one of the project's own (`IfqError` subclasses), with a one-line
message naming the file. Each test prints how many cases it ran (`pytest -s` or `-rP` shows
them); IFQ_FUZZ_EXAMPLES sets the number per property.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import struct
import zlib
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ifq_tinier_yolo import netdef
from ifq_tinier_yolo.datasets import fddb, wider
from ifq_tinier_yolo.engine import modelfile as fmt
from ifq_tinier_yolo.engine import runtime
from ifq_tinier_yolo.errors import IfqError
from ifq_tinier_yolo.evaluation.fddb import score_detections
from ifq_tinier_yolo.evaluation.wider import read_prediction_file
from ifq_tinier_yolo.imageio import read_image_sized

import fddb_files

FIXTURE_WIDER = Path(__file__).resolve().parent / 'fixtures' / 'wider'
# cases per property: ~1 s each by default; IFQ_FUZZ_EXAMPLES=5000 for a longer campaign
EXAMPLES = int(os.environ.get('IFQ_FUZZ_EXAMPLES', '150'))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# tokens that break parsers: numbers at and over the limits, non-ASCII digits, paths, controls
TOKENS = ('0', '1', '-1', '4', '10', '3.5', '-0', '1e400', '1e-400', 'nan', 'inf', '-inf', '1_000', '0x10',
          '99999999999999999999', '9' * 5000, '\u0663', '\u00b2', '', ' ', '\t', 'x', '..', '../x.jpg',
          '/etc/passwd', 'C:\\x.jpg', 'a b', '\x00', '\x1b[1m', '\ufeff', '\u00e9', '13--Interview/x.jpg')
FDDB_ELLIPSES = ('2002/08/11/big/img_591\n1\n123.583300 85.549500 1.265839 269.693400 161.781200  1 \n'
                 '2002/07/19/big/img_423\n2\n67.363819 44.511485 -1.476417 105.249970 87.209036  1\n'
                 '41.936870 27.064477 1.471906 184.070915 129.345601  1\n')
FDDB_LIST = '2002/08/11/big/img_591\n2002/07/19/big/img_423\n'
FDDB_RECTS = ('2002/08/11/big/img_591\n2\n150.0 80.5 230.2 250.1 0.99\n10 10 20 20 0.1\n'
              '2002/07/19/big/img_423\n1\n60 40 90 100 0.75\n')
FDDB_ELLIPSE_DETECTIONS = '2002/08/11/big/img_591\n1\n120 80 1.3 270 160 0.9\n2002/07/19/big/img_423\n0\n'
IMAGE_SIZES = [(450, 340), (300, 220)]   # (width, height) of the two FDDB images above


def report(name: str, cases: int, record_property) -> None:
    record_property('fuzz_cases', cases)
    print(f'\nfuzz {name}: {cases} cases')


def check_error(e: IfqError, names: str) -> None:
    """A project error: one line, naming the file."""
    message = str(e)
    assert '\n' not in message and '\r' not in message, message
    assert names in message, message


# --- mutations ------------------------------------------------------------------------------

@st.composite
def mutated_text(draw, base: str, max_ops: int = 4) -> str:
    """`base` after 1..max_ops line- and token-level edits (delete, duplicate, swap, replace, insert, cut)."""
    lines = base.split('\n')
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(('delete', 'duplicate', 'swap', 'token', 'insert', 'cut', 'char', 'blank')))
        k = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if not lines:
            lines = ['']
        if op == 'delete':
            del lines[k]
        elif op == 'duplicate':
            lines.insert(k, lines[k])
        elif op == 'swap':
            j = draw(st.integers(0, len(lines) - 1))
            lines[k], lines[j] = lines[j], lines[k]
        elif op == 'token':
            fields = lines[k].split(' ')
            i = draw(st.integers(0, len(fields) - 1))
            fields[i] = draw(st.sampled_from(TOKENS) | st.text(max_size=12))
            lines[k] = ' '.join(fields)
        elif op == 'insert':
            lines.insert(k, draw(st.sampled_from(TOKENS) | st.text(max_size=30)))
        elif op == 'cut':
            lines = lines[:k] + [lines[k][:draw(st.integers(0, len(lines[k])))]]
        elif op == 'char':
            if lines[k]:
                i = draw(st.integers(0, len(lines[k]) - 1))
                lines[k] = lines[k][:i] + draw(st.characters()) + lines[k][i + 1:]
        else:
            lines.insert(k, '')
    text = '\n'.join(lines)
    ending = draw(st.sampled_from(('\n', '\r\n', '\r')))
    return draw(st.sampled_from(('', '\ufeff'))) + text.replace('\n', ending)


def encode(text: str) -> bytes:
    return text.encode('utf-8', 'surrogatepass')


@st.composite
def mutated_bytes(draw, base: bytes, max_ops: int = 4) -> bytes:
    """`base` after 1..max_ops byte edits: bit flips, byte sets, cuts, insertions, deletions."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(('flip', 'set', 'cut', 'insert', 'delete')))
        i = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == 'flip' and data:
            data[i] ^= 1 << draw(st.integers(0, 7))
        elif op == 'set' and data:
            data[i] = draw(st.sampled_from((0, 1, 2, 0x7F, 0x80, 0xFF)) | st.integers(0, 255))
        elif op == 'cut':
            del data[i:]
        elif op == 'insert':
            data[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif data:
            del data[i:i + draw(st.integers(1, 16))]
    return bytes(data)


# --- WIDER annotation reader ----------------------------------------------------------------

@pytest.fixture
def wider_root(tmp_path: Path) -> Path:
    root = tmp_path / 'wider'
    shutil.copytree(FIXTURE_WIDER, root)
    return root


def wider_property(root: Path, strategy, counter: list[int]) -> Callable[[], None]:
    ann = wider.annotation_path(root, 'train')

    @FUZZ
    @given(data=strategy, check_images=st.booleans())
    def prop(data: bytes, check_images: bool) -> None:
        counter[0] += 1
        ann.write_bytes(data)
        try:
            items = wider.read_wider(root, 'train', drop_invalid=check_images, check_images=check_images)
        except IfqError as e:
            check_error(e, str(root))
            return
        for item in items:   # what the reader accepts is what its callers rely on
            assert item.boxes.dtype == np.float32 and item.boxes.shape == (len(item.attrs), 4)
            assert item.path.is_relative_to(wider.images_dir(root, 'train'))
    return prop


def test_wider_reader_random_bytes(wider_root: Path, record_property):
    counter = [0]
    wider_property(wider_root, st.binary(max_size=600), counter)()
    report('WIDER reader, random bytes', counter[0], record_property)
    assert counter[0] >= EXAMPLES


def test_wider_reader_mutated_files(wider_root: Path, record_property):
    counter = [0]
    base = wider.annotation_path(FIXTURE_WIDER, 'train').read_text()
    wider_property(wider_root, mutated_text(base).map(encode), counter)()
    report('WIDER reader, mutated annotation files', counter[0], record_property)
    assert counter[0] >= EXAMPLES


# --- FDDB readers -------------------------------------------------------------------------------

def fddb_readers(path: Path) -> dict[str, Callable[[], object]]:
    return {'list': lambda: fddb.read_fold_list(path), 'ellipses': lambda: fddb_files.read_ellipses(path),
            'rect detections': lambda: fddb_files.read_detections(path),
            'ellipse detections': lambda: fddb_files.read_detections(path, ellipse=True)}


def run_reader(read: Callable[[], object], path: Path) -> object | None:
    try:
        return read()
    except IfqError as e:
        check_error(e, str(path))
        return None


def test_fddb_readers_random_bytes(tmp_path: Path, record_property):
    path = tmp_path / 'fuzz.txt'
    counter = [0]

    @FUZZ
    @given(data=st.binary(max_size=600) | st.text(alphabet='0123456789.-eE naif\n\r/_', max_size=300).map(encode))
    def prop(data: bytes) -> None:
        counter[0] += 1
        path.write_bytes(data)
        for read in fddb_readers(path).values():
            run_reader(read, path)

    prop()
    report('FDDB readers (4 each), random bytes', counter[0], record_property)
    assert counter[0] >= EXAMPLES


@pytest.mark.parametrize('kind, base', [('list', FDDB_LIST), ('ellipses', FDDB_ELLIPSES),
                                        ('rect detections', FDDB_RECTS),
                                        ('ellipse detections', FDDB_ELLIPSE_DETECTIONS)],
                         ids=['list', 'ellipses', 'rect-detections', 'ellipse-detections'])
def test_fddb_readers_mutated_files(tmp_path: Path, record_property, kind: str, base: str):
    path = tmp_path / 'fuzz.txt'
    counter = [0]

    @FUZZ
    @given(data=mutated_text(base).map(encode))
    def prop(data: bytes) -> None:
        counter[0] += 1
        path.write_bytes(data)
        blocks = run_reader(fddb_readers(path)[kind], path)
        for block in blocks if kind != 'list' and blocks is not None else []:
            name, regions = block
            assert regions.dtype == np.float64 and np.isfinite(regions).all()

    prop()
    report(f'FDDB {kind} reader, mutated files', counter[0], record_property)
    assert counter[0] >= EXAMPLES


def test_fddb_evaluation_of_mutated_files(tmp_path: Path, record_property):
    """Whatever the readers accept, aligning it with the list and scoring it raises only project errors."""
    paths = {name: tmp_path / f'{name}.txt' for name in ('list', 'ellipses', 'detections')}
    counter = [0]

    @FUZZ
    @given(names=mutated_text(FDDB_LIST, max_ops=1) | st.just(FDDB_LIST),
           ellipses=mutated_text(FDDB_ELLIPSES, max_ops=2) | st.just(FDDB_ELLIPSES),
           detections=mutated_text(FDDB_RECTS, max_ops=3), ellipse=st.booleans())
    def prop(names: str, ellipses: str, detections: str, ellipse: bool) -> None:
        counter[0] += 1
        if ellipse:
            detections = detections.replace('0.99', '0.3 0.99')   # six columns where the mutation kept five
        for (name, path), text in zip(paths.items(), (names, ellipses, detections)):
            path.write_bytes(encode(text))
        try:
            entries = fddb.list_entries(paths['list'])
            ann = fddb.align_blocks(entries, fddb.iter_blocks(paths['ellipses'], fddb.ELLIPSE_COLUMNS, True),
                                    'annotations', [paths['ellipses']])
            det = fddb.align_blocks(entries, fddb.iter_blocks(paths['detections'], fddb.detection_columns(ellipse)),
                                    'detections', [paths['detections']], suffix='.jpg')
            sizes = (IMAGE_SIZES * len(entries))[:len(entries)]
            roc = score_detections(ann, det, sizes)
        except IfqError as e:
            check_error(e, '')
            return
        assert roc.disc.shape[1] == 3 and np.isfinite(roc.disc[:, :2]).all()

    prop()
    report('FDDB list + ellipses + detections -> evaluation, mutated files', counter[0], record_property)
    assert counter[0] >= EXAMPLES


# --- WIDER prediction files (wider eval) and images -------------------------------------------

def test_wider_prediction_reader_mutated_files(tmp_path: Path, record_property):
    path = tmp_path / '0--Parade' / '0_a.txt'
    path.parent.mkdir()
    counter = [0]

    @FUZZ
    @given(data=mutated_text('0_a.jpg\n2\n10 10 40 40 0.9\n1 2 3 4 0.5\n').map(encode) | st.binary(max_size=300))
    def prop(data: bytes) -> None:
        counter[0] += 1
        path.write_bytes(data)
        boxes = run_reader(lambda: read_prediction_file(path), path)
        assert boxes is None or (boxes.dtype == np.float64 and boxes.shape[1] == 5 and np.isfinite(boxes).all())

    prop()
    report('WIDER prediction file reader, mutated files and random bytes', counter[0], record_property)
    assert counter[0] >= EXAMPLES


def test_image_reader_mutated_files(tmp_path: Path, record_property, capfd):
    """Damaged images of every format give an ImageError or a uint8 BGR image, and the decoders print nothing."""
    image = np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8)
    seeds = {ext: cv2.imencode(ext, image)[1].tobytes() for ext in ('.jpg', '.png', '.bmp', '.tif', '.webp')}
    counter = [0]

    @FUZZ
    @given(data=st.sampled_from(sorted(seeds)).flatmap(lambda ext: mutated_bytes(seeds[ext]).map(lambda d: (ext, d))))
    def prop(data: tuple[str, bytes]) -> None:
        counter[0] += 1
        ext, content = data
        path = tmp_path / f'fuzz{ext}'
        path.write_bytes(content)
        try:
            bgr, (width, height) = read_image_sized(path)
        except IfqError as e:
            check_error(e, str(path))
            return
        assert bgr.dtype == np.uint8 and bgr.ndim == 3 and bgr.shape[2] == 3 and width > 0 and height > 0

    prop()
    err = capfd.readouterr().err
    report('image reader, mutated JPEG / PNG / BMP / TIFF / WebP files', counter[0], record_property)
    assert err == ''   # no 'libpng error', 'Corrupt JPEG data' or OpenCV log lines reach the user
    assert counter[0] >= EXAMPLES


# --- the .ifq loader -------------------------------------------------------------------------

SOURCE = 'fuzz.ifq'
MAX_RUN_SIZE = 256   # run mutated models at their input size up to this side (seconds otherwise)
CANVAS = np.random.default_rng(0).integers(0, 256, (24, 40, 3), dtype=np.uint8)   # a small BGR image


def load(data: bytes, loaded: list[int]) -> None:
    """Parse; for a file that loads, prepare it and run the engine once (what `detect --model` does)."""
    try:
        model = fmt.from_bytes(data, SOURCE)
    except IfqError as e:
        check_error(e, f'{SOURCE}: ')
        return
    loaded[0] += 1
    runtime.prepare(model)
    # the model's own input size, as `detect --model` uses it; a small one where the file names a large one
    size = model.input_size if model.input_size <= MAX_RUN_SIZE else netdef.total_stride(model.specs)
    boxes = runtime.detect(model, CANVAS, 0.1, 0.5, img_size=size)
    assert boxes.dtype == np.float64 and boxes.shape[1] == 5


def with_fresh_crc(data: bytes) -> bytes:
    """Header payload length and CRC made to fit `data` (from byte 16 up to the CRC), so only the
    structural checks stand between a mutated payload and the engine."""
    if len(data) < fmt.HEADER.size:
        return data
    payload = data[fmt.HEADER.size:-fmt.CRC.size] if len(data) >= fmt.HEADER.size + fmt.CRC.size else b''
    magic, version, flags, _ = fmt.HEADER.unpack_from(data)
    body = fmt.HEADER.pack(magic, version, flags, len(payload)) + payload
    return body + fmt.CRC.pack(zlib.crc32(body))


def fuzz_loader(strategy, name: str, record_property) -> None:
    """Load every file `strategy` draws (at least EXAMPLES of them) and report how many."""
    counter, loaded = [0], [0]

    @FUZZ
    @given(data=strategy)
    def prop(data: bytes) -> None:
        counter[0] += 1
        load(data, loaded)

    prop()
    report(name, counter[0], record_property)
    assert counter[0] >= EXAMPLES


def test_model_loader_random_bytes(record_property):
    fuzz_loader(st.binary(max_size=2048) | st.binary(max_size=600).map(lambda b: fmt.MAGIC + b),
                '.ifq loader, random bytes', record_property)


def test_model_loader_mutated_files(tiny_ifq_bytes: bytes, record_property):
    fmt.from_bytes(tiny_ifq_bytes)   # the seed itself is valid
    fuzz_loader(mutated_bytes(tiny_ifq_bytes), '.ifq loader, mutated files', record_property)


def test_model_loader_mutated_payloads_with_valid_crc(tiny_ifq_bytes: bytes, record_property):
    """Mutations past the CRC: every length, shape, kind and value field meets the structural checks."""
    counter, loaded = [0], [0]
    header, payload = tiny_ifq_bytes[:fmt.HEADER.size], tiny_ifq_bytes[fmt.HEADER.size:-fmt.CRC.size]

    @FUZZ
    @given(payload=mutated_bytes(payload, max_ops=3),
           header=st.just(header) | mutated_bytes(header, max_ops=1).filter(lambda h: len(h) == len(header)))
    def prop(payload: bytes, header: bytes) -> None:
        counter[0] += 1
        load(with_fresh_crc(header + payload + bytes(fmt.CRC.size)), loaded)

    prop()
    report(f'.ifq loader, mutated payloads with a valid CRC ({loaded[0]} loaded and ran)', counter[0],
           record_property)
    assert counter[0] >= EXAMPLES


def test_model_loader_field_values(tiny_ifq_bytes: bytes, record_property):
    """Every 16-bit field of the description and layer table set to extreme values, CRC fixed."""
    counter, loaded = [0], [0]
    table_end = fmt.HEADER.size + fmt.DESCRIPTION.size + 8 * 2 + fmt.LAYER_ROW.size * 4   # 2 anchors, 4 layers

    @FUZZ
    @given(at=st.integers(fmt.HEADER.size, table_end - 2),
           value=st.sampled_from((0, 1, 2, 3, 15, 16, 255, 256, 0x7FFF, 0x8000, 0xFFFF)) | st.integers(0, 0xFFFF))
    def prop(at: int, value: int) -> None:
        counter[0] += 1
        data = bytearray(tiny_ifq_bytes)
        struct.pack_into('<H', data, at, value)
        load(with_fresh_crc(bytes(data)), loaded)

    prop()
    report(f'.ifq loader, extreme header/table fields with a valid CRC ({loaded[0]} loaded and ran)',
           counter[0], record_property)
    assert counter[0] >= EXAMPLES


def test_model_loader_deeply_nested_metadata(tiny_ifq_bytes: bytes):
    """Regression: metadata JSON nested 60000 deep made json.loads raise RecursionError, not ModelFileError."""
    model = dataclasses.replace(fmt.from_bytes(tiny_ifq_bytes), metadata='{}')
    body = fmt.to_bytes(model)[:-fmt.CRC.size]
    block = struct.pack('<I', 2) + b'{}' + bytes(2)   # the metadata block closes the payload
    assert body.endswith(block)
    nested = b'[' * 60000
    payload = body[fmt.HEADER.size:-len(block)] + struct.pack('<I', len(nested)) + nested
    header = fmt.HEADER.pack(fmt.MAGIC, fmt.VERSION, 0, len(payload))
    data = header + payload + fmt.CRC.pack(zlib.crc32(header + payload))
    with pytest.raises(IfqError) as e:
        fmt.from_bytes(data, SOURCE)
    check_error(e.value, f'{SOURCE}: ')
