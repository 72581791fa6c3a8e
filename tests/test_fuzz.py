"""Property tests (hypothesis): random bytes and mutated valid files never crash the parsers.

Targets: the WIDER annotation reader, the FDDB fold-list / ellipse / detection readers (and the
evaluation that consumes what they accept), the WIDER prediction-file reader and the image
reader (the `.ifq` model loader: test_fuzz_models.py; the strategies: fuzz_helpers.py). The only
exception allowed out of them is one of the project's own (`IfqError` subclasses), with a one-line
message naming the file. Each test prints how many cases it ran (`pytest -s` or `-rP` shows
them); IFQ_FUZZ_EXAMPLES sets the number per property.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ifq_tinier_yolo.datasets import fddb, wider
from ifq_tinier_yolo.errors import IfqError
from ifq_tinier_yolo.evaluation.fddb import score_detections
from ifq_tinier_yolo.evaluation.wider import read_prediction_file
from ifq_tinier_yolo.imageio import read_image_sized

import fddb_files
from fuzz_helpers import EXAMPLES, FUZZ, check_error, encode, mutated_bytes, mutated_text, report

FIXTURE_WIDER = Path(__file__).resolve().parent / 'fixtures' / 'wider'
FDDB_ELLIPSES = ('2002/08/11/big/img_591\n1\n123.583300 85.549500 1.265839 269.693400 161.781200  1 \n'
                 '2002/07/19/big/img_423\n2\n67.363819 44.511485 -1.476417 105.249970 87.209036  1\n'
                 '41.936870 27.064477 1.471906 184.070915 129.345601  1\n')
FDDB_LIST = '2002/08/11/big/img_591\n2002/07/19/big/img_423\n'
FDDB_RECTS = ('2002/08/11/big/img_591\n2\n150.0 80.5 230.2 250.1 0.99\n10 10 20 20 0.1\n'
              '2002/07/19/big/img_423\n1\n60 40 90 100 0.75\n')
FDDB_ELLIPSE_DETECTIONS = '2002/08/11/big/img_591\n1\n120 80 1.3 270 160 0.9\n2002/07/19/big/img_423\n0\n'
IMAGE_SIZES = [(450, 340), (300, 220)]   # (width, height) of the two FDDB images above


# --- WIDER annotation reader ----------------------------------------------------------------

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


def test_wider_reader_random_bytes(wider_copy: Path, record_property):
    counter = [0]
    wider_property(wider_copy, st.binary(max_size=600), counter)()
    report('WIDER reader, random bytes', counter[0], record_property)
    assert counter[0] >= EXAMPLES


def test_wider_reader_mutated_files(wider_copy: Path, record_property):
    counter = [0]
    base = wider.annotation_path(FIXTURE_WIDER, 'train').read_text()
    wider_property(wider_copy, mutated_text(base).map(encode), counter)()
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
