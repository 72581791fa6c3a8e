"""`detect`: images, folders, videos, bad files, JSON lines schema, annotated copies, --skip-existing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from cli_helpers import VIDEO_FRAMES, count_frames, make_video, run

ROOT = Path(__file__).resolve().parents[1]
FACE_KEYS = ['x', 'y', 'w', 'h', 'score']


pytestmark = pytest.mark.usefixtures('torch_one_thread')


def noise(shape: tuple[int, ...], dtype=np.uint8, high: int = 256) -> np.ndarray:
    return np.random.default_rng(0).integers(0, high, shape).astype(dtype)


def write(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def check_record(rec: dict, width: int, height: int, video: bool = False) -> None:
    """The schema of docs/JSON_OUTPUT.md, and boxes inside the image."""
    keys = ['image', 'frame', 'width', 'height', 'faces'] if video else ['image', 'width', 'height', 'faces']
    assert list(rec) == keys
    assert isinstance(rec['image'], str)
    assert (rec['width'], rec['height']) == (width, height)
    scores = [f['score'] for f in rec['faces']]
    assert scores == sorted(scores, reverse=True)
    for face in rec['faces']:
        assert list(face) == FACE_KEYS and all(isinstance(face[k], float) for k in FACE_KEYS)
        assert 0 <= face['x'] <= face['x'] + face['w'] <= width + 0.01
        assert 0 <= face['y'] <= face['y'] + face['h'] <= height + 0.01
        assert 0 <= face['score'] <= 1


def records(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines()]


def test_single_image_json_stdout(capsys, tmp_path: Path, torch_flags: list[str]):
    image = write(tmp_path / 'one.jpg', noise((48, 80, 3)))
    rc, out, err = run(capsys, 'detect', str(image), '--json', '-', *torch_flags)
    assert rc == 0
    [rec] = records(out)
    check_record(rec, 80, 48)
    assert rec['image'] == str(image) and rec['faces']
    assert err.strip().splitlines()[-1].startswith('detect: 1 images, ')
    assert 'images/s' in err


def detect_without_backend(capsys, tmp_path: Path, model: Path) -> dict:
    """`detect` of one image with `--model` and no `--backend`: the one record, checked."""
    image = write(tmp_path / 'one.jpg', noise((48, 80, 3)))
    rc, out, _ = run(capsys, 'detect', str(image), '--model', str(model), '--img-size', '64', '--conf', '0')
    assert rc == 0
    [rec] = records(out)
    check_record(rec, 80, 48)
    return rec


def test_integer_backend_is_the_default(capsys, tmp_path: Path, random_ifq: Path):
    assert detect_without_backend(capsys, tmp_path, random_ifq)['faces']


def test_pt_model_on_the_int_backend_says_which_flag(capsys, tmp_path: Path, random_checkpoint: Path):
    image = write(tmp_path / 'one.jpg', noise((20, 20, 3)))
    rc, out, err = run(capsys, 'detect', str(image), '--model', str(random_checkpoint), '--backend', 'int')
    assert rc == 1 and out == '' and '--backend torch' in err and err.count('\n') == 1


def test_backend_follows_the_model_suffix(capsys, tmp_path: Path, random_checkpoint: Path):
    detect_without_backend(capsys, tmp_path, random_checkpoint)


def test_no_json_no_out_prints_records(capsys, tmp_path: Path, torch_flags: list[str]):
    image = write(tmp_path / 'one.png', noise((30, 40, 3)))
    rc, out, _ = run(capsys, 'detect', str(image), *torch_flags)
    assert rc == 0 and len(records(out)) == 1


def test_json_file_and_annotated_copies(capsys, tmp_path: Path, torch_flags: list[str]):
    src = tmp_path / 'in'
    write(src / 'a.jpg', noise((48, 64, 3)))
    write(src / 'deep' / 'b.png', noise((32, 32, 3)))
    write(src / 'c.pgm', noise((20, 24)))
    (src / 'notes.txt').write_text('not an image, not collected')
    out_dir, jsonl = tmp_path / 'out', tmp_path / 'faces.jsonl'
    rc, out, _ = run(capsys, 'detect', str(src), '--out', str(out_dir), '--json', str(jsonl), *torch_flags)
    assert rc == 0 and out == ''
    recs = records(jsonl.read_text())
    assert [r['image'] for r in recs] == [str(src / 'a.jpg'), str(src / 'c.pgm'), str(src / 'deep' / 'b.png')]
    for rec, size in zip(recs, [(64, 48), (24, 20), (32, 32)]):
        check_record(rec, *size)
    copies = sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob('*') if p.is_file())
    assert copies == ['a.jpg', 'c.png', 'deep/b.png']   # grayscale-only .pgm becomes .png
    assert cv2.imread(str(out_dir / 'a.jpg')).shape == (48, 64, 3)
    assert not list(tmp_path.glob('.*.tmp'))


def test_folder_with_bad_files(capsys, tmp_path: Path, torch_flags: list[str]):
    folder = tmp_path / 'mixed'
    write(folder / 'good.jpg', noise((40, 40, 3)))
    (folder / 'empty.jpg').write_bytes(b'')
    (folder / 'text.png').write_text('hello, I am text')
    rc, out, err = run(capsys, 'detect', str(folder), '--json', '-', '--out', str(tmp_path / 'ann'), *torch_flags)
    assert rc == 1
    [rec] = records(out)
    assert rec['image'] == str(folder / 'good.jpg')
    lines = err.strip().splitlines()
    assert [ln for ln in lines if 'empty.jpg' in ln] == [f'skipped: {folder / "empty.jpg"}: empty file']
    assert len([ln for ln in lines if 'text.png' in ln and ln.startswith('skipped: ')]) == 1
    assert lines[-1].startswith('detect: 1 images, ') and ', 2 failures, ' in lines[-1]
    assert [p.name for p in (tmp_path / 'ann').iterdir()] == ['good.jpg']


@pytest.mark.parametrize('name, image', [
    ('gray.png', noise((30, 50))),
    ('rgba.png', noise((30, 50, 4))),
    ('deep.png', noise((30, 50, 3), np.uint16, 65536)),
    ('gray16.png', noise((30, 50), np.uint16, 65536)),
])
def test_image_kinds(capsys, tmp_path: Path, torch_flags: list[str], name: str, image: np.ndarray):
    path = write(tmp_path / name, image)
    rc, out, _ = run(capsys, 'detect', str(path), '--json', '-', '--out', str(tmp_path / 'ann'), *torch_flags)
    assert rc == 0
    check_record(records(out)[0], 50, 30)
    assert cv2.imread(str(tmp_path / 'ann' / name)).shape == (30, 50, 3)


def test_image_over_8192_px_is_resized_not_refused(capsys, tmp_path: Path, torch_flags: list[str]):
    path = write(tmp_path / 'wide.png', noise((10, 9000, 3)))
    rc, out, _ = run(capsys, 'detect', str(path), '--json', '-', *torch_flags)
    assert rc == 0
    [rec] = records(out)
    check_record(rec, 9000, 10)   # reported and boxed in the file's own pixels


def test_missing_path_is_one_line_error(capsys, tmp_path: Path, torch_flags: list[str]):
    rc, out, err = run(capsys, 'detect', str(tmp_path / 'absent.jpg'), '--json', '-', *torch_flags)
    assert rc == 1 and out == ''
    assert err == f'error: {tmp_path / "absent.jpg"}: no such file or folder\n'


def test_folder_without_images_is_one_line_error(capsys, tmp_path: Path, torch_flags: list[str]):
    (tmp_path / 'docs').mkdir()
    (tmp_path / 'docs' / 'readme.txt').write_text('no images here')
    rc, out, err = run(capsys, 'detect', str(tmp_path / 'docs'), *torch_flags)
    assert rc == 1 and out == ''
    assert err.startswith(f'error: {tmp_path / "docs"}: no images in this folder') and err.count('\n') == 1


@pytest.mark.parametrize('out', ['photos', '.'])
def test_out_holding_the_input_folder_says_so(capsys, tmp_path: Path, torch_flags: list[str], out: str):
    """`detect photos --out photos` would write the copies over the images: a clear error, nothing written."""
    write(tmp_path / 'photos' / 'a.jpg', noise((20, 20, 3)))
    rc, out_text, err = run(capsys, 'detect', str(tmp_path / 'photos'), '--out', str(tmp_path / out), *torch_flags)
    assert rc == 1 and out_text == '' and err.count('\n') == 1
    assert err.startswith(f'error: --out {tmp_path / out}: holds the input folder {tmp_path / "photos"}')
    assert sorted(p.name for p in (tmp_path / 'photos').iterdir()) == ['a.jpg']


def test_unwritable_outputs_are_one_line_errors(capsys, tmp_path: Path, torch_flags: list[str]):
    image = write(tmp_path / 'a.jpg', noise((20, 20, 3)))
    (tmp_path / 'file').write_text('a file, not a folder')
    for flags in (['--json', str(tmp_path / 'file' / 'faces.jsonl')], ['--out', str(tmp_path / 'file' / 'ann')]):
        rc, _, err = run(capsys, 'detect', str(image), *flags, *torch_flags)
        assert rc == 1 and err.startswith(f'error: {tmp_path / "file"}') and err.count('\n') == 1


def test_video_every_frame(capsys, tmp_path: Path, torch_flags: list[str]):
    video = make_video(tmp_path / 'clip.avi')
    rc, out, err = run(capsys, 'detect', str(video), '--json', '-', '--out', str(tmp_path / 'ann'), *torch_flags)
    assert rc == 0
    recs = records(out)
    assert [r['frame'] for r in recs] == list(range(VIDEO_FRAMES))
    for rec in recs:
        check_record(rec, 64, 64, video=True)
        assert rec['image'] == str(video)
    assert count_frames(tmp_path / 'ann' / 'clip.avi') == VIDEO_FRAMES
    assert f'detect: {VIDEO_FRAMES} images, ' in err


def test_broken_video_is_reported_and_skipped(capsys, tmp_path: Path, torch_flags: list[str]):
    (tmp_path / 'fake.mp4').write_text('not a video')
    good = write(tmp_path / 'good.jpg', noise((20, 20, 3)))
    rc, out, err = run(capsys, 'detect', str(tmp_path / 'fake.mp4'), str(good), '--json', '-', *torch_flags)
    assert rc == 1
    assert [r['image'] for r in records(out)] == [str(good)]
    assert any(ln.startswith(f'skipped: {tmp_path / "fake.mp4"}: ') for ln in err.splitlines())


def test_skip_existing_fills_in_only_what_is_missing(capsys, tmp_path: Path, torch_flags: list[str]):
    src, out_dir, jsonl = tmp_path / 'in', tmp_path / 'out', tmp_path / 'faces.jsonl'
    for k in range(3):
        write(src / f'{k}.jpg', noise((24 + 8 * k, 32, 3)))
    args = ['detect', str(src), '--out', str(out_dir), '--json', str(jsonl), *torch_flags]
    assert run(capsys, *args)[0] == 0
    first = jsonl.read_text()
    (out_dir / '1.jpg').unlink()
    kept = (out_dir / '0.jpg').stat().st_mtime_ns
    rc, _, err = run(capsys, *args, '--skip-existing')
    assert rc == 0 and 'detect: 1 images, ' in err and '2 skipped (done before)' in err
    assert jsonl.read_text() == first                    # same records, same order
    assert (out_dir / '1.jpg').is_file() and (out_dir / '0.jpg').stat().st_mtime_ns == kept


def test_skip_existing_rejects_a_foreign_json_file(capsys, tmp_path: Path, torch_flags: list[str]):
    image = write(tmp_path / 'a.jpg', noise((20, 20, 3)))
    jsonl = tmp_path / 'faces.jsonl'
    jsonl.write_text('{"image": "a.jpg"}\nnot json\n')
    rc, _, err = run(capsys, 'detect', str(image), '--json', str(jsonl), '--skip-existing', *torch_flags)
    assert rc == 1 and err.startswith(f'error: {jsonl}:2: not a detect JSON record')


def test_module_entry_point_has_no_traceback(tmp_path: Path, random_ifq: Path):
    folder = tmp_path / 'mixed'
    write(folder / 'good.jpg', noise((40, 40, 3)))
    (folder / 'empty.jpg').write_bytes(b'')
    (folder / 'text.png').write_text('hello')
    env = {**os.environ, 'PYTHONPATH': str(ROOT)}
    proc = subprocess.run([sys.executable, '-m', 'ifq_tinier_yolo', 'detect', str(folder), '--json', '-',
                           '--model', str(random_ifq), '--img-size', '64'],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 1
    assert 'Traceback' not in proc.stderr
    assert [r['image'] for r in records(proc.stdout)] == [str(folder / 'good.jpg')]
    assert len(proc.stderr.strip().splitlines()) == 3   # two bad files + the summary


@pytest.mark.parametrize('flags, mode', [([], 'auto'), (['--upscale'], 'on'), (['--no-upscale'], 'off')])
@pytest.mark.parametrize('command', [['detect', 'x.jpg'], ['webcam'],
                                     ['fddb', 'detect', '--folds-dir', 'F', '--images', 'I', '--out', 'O'],
                                     ['wider', 'predict', '--wider-root', 'W', '--out', 'O']])
def test_upscale_flags_set_the_detectors_mode(command: list[str], flags: list[str], mode: str, random_ifq: Path):
    from ifq_tinier_yolo.apps.detect import detector_from_args
    from ifq_tinier_yolo.cli import build_parser
    args = build_parser().parse_args([*command, '--model', str(random_ifq), *flags])
    assert detector_from_args(args).upscale == mode


def test_upscale_and_no_upscale_exclude_each_other(capsys):
    from ifq_tinier_yolo.cli import build_parser
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(['detect', 'x.jpg', '--upscale', '--no-upscale'])
    assert stop.value.code == 2 and 'not allowed with argument --upscale' in capsys.readouterr().err
