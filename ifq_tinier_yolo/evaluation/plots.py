"""ROC plots as PNG files (matplotlib's Agg canvas: no display, no global backend switch)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..fileio import atomic_open

FDDB_MAX_FP = 2000   # the false-positive range FDDB papers plot


def plot_roc(disc: np.ndarray, cont: np.ndarray, path: str | Path, label: str,
             max_fp: float | None = FDDB_MAX_FP) -> None:
    """Write a PNG of TPR against false positives; disc (M, >=2) and cont (M, >=2) rows are TPR, FP.

    The x axis stops at `max_fp` (None: the largest FP of the curves); the file is written atomically.
    """
    fig = Figure(figsize=(6.4, 4.8), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for curve, kind, style in ((disc, 'discrete', '-'), (cont, 'continuous', '--')):
        order = np.argsort(curve[:, 1], kind='stable')   # plot left to right in FP
        ax.plot(curve[order, 1], curve[order, 0], style, label=f'{label} ({kind})')
    largest = max([float(c[:, 1].max()) for c in (disc, cont) if len(c)], default=1.0)
    right = largest if max_fp is None else min(max_fp, largest)
    ax.set_xlim(0, max(right, 1.0))
    ax.set_ylim(0, 1)
    ax.set_xlabel('false positives')
    ax.set_ylabel('true positive rate')
    ax.set_title('FDDB ROC')
    ax.grid(True, alpha=0.3)
    ax.legend(loc='lower right')
    with atomic_open(path, 'wb') as f:
        fig.savefig(f, format='png')
