"""The command-line contract: every subcommand has --help, and the package imports light."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ifq_tinier_yolo.cli import main

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [['data', 'stats'], ['train'], ['convert'], ['verify'], ['report'], ['detect'], ['webcam'],
            ['fddb', 'detect'], ['fddb', 'eval'], ['wider', 'predict'], ['wider', 'eval']]


@pytest.mark.parametrize('command', COMMANDS, ids=' '.join)
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, '--help'])
    assert e.value.code == 0
    assert 'usage:' in capsys.readouterr().out


def test_unknown_subcommand_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(['fly'])
    assert e.value.code == 2


def test_importing_the_package_and_the_cli_does_not_import_torch():
    code = ('import sys, ifq_tinier_yolo, ifq_tinier_yolo.cli; ifq_tinier_yolo.cli.build_parser(); '
            'from ifq_tinier_yolo import Detector; sys.exit("torch" in sys.modules)')
    assert subprocess.run([sys.executable, '-c', code], cwd=REPO).returncode == 0


def test_a_missing_dependency_is_named_in_one_line(tmp_path: Path):
    # hide torch: `train` must say what to install instead of a traceback
    code = ('import sys; sys.modules["torch"] = None; from ifq_tinier_yolo.cli import main; '
            f'sys.exit(main(["train", "--wider-root", "{tmp_path}", "--out", "{tmp_path / "run"}"]))')
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("error: this command needs the Python package 'torch': "
                                   "pip install -r requirements.txt")


def test_closed_stdout_stops_quietly():
    # `... | head -1`: the reader went away; no 'error: Broken pipe' line, the Unix status for SIGPIPE
    code = ('import io, os, sys\n'
            'class Closed(io.TextIOWrapper):\n'
            '    def write(self, text): raise BrokenPipeError(32, "Broken pipe")\n'
            'sys.stdout = Closed(open(os.devnull, "wb"))\n'
            'from ifq_tinier_yolo.cli import main\n'
            'sys.exit(main(["report", "--table"]))\n')
    proc = subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 141 and proc.stderr == ''
