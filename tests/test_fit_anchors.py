"""scripts/fit_anchors.py: one k-means over all heads' anchors, the smallest to the finest head."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_per_head_anchors_on_the_fixture_set(fixture_wider: Path):
    out = subprocess.run([sys.executable, str(REPO / 'scripts' / 'fit_anchors.py'), '--wider-root', str(fixture_wider),
                          '--net', 'v2', '--restarts', '1', '--min-px', '2'],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    heads = {m[0]: (int(m[1]), re.findall(r'\(([\d.]+), ([\d.]+)\)', m[2]))
             for m in re.findall(r'^(\w+) \(stride (\d+)\): \((.*)\)$', out, re.M)}
    assert {k: (s, len(a)) for k, (s, a) in heads.items()} == {'head8': (8, 2), 'head16': (16, 3)}
    px = {k: [float(w) * s * float(h) * s for w, h in a] for k, (s, a) in heads.items()}
    assert max(px['head8']) <= min(px['head16'])              # the finest head has the smallest anchors
    assert 0 < float(re.search(r'^mean best IoU ([\d.]+)$', out, re.M).group(1)) <= 1
