"""Writing Aff-Wild2 label files (the format of :mod:`affbatch.evaluation.labels`, which reads them).

``<name>.txt``: first line ``valence,arousal``, line k+1 holds frame k, ``-5`` marks a frame
without a valid label. Everything the training package produces as labels (aggregated
annotations, RECOLA gold standards) goes through :func:`write_label_file`, so that
``affbatch eval`` and the training data loader read one format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from affbatch.errors import LabelError
from affbatch.evaluation.labels import HEADER, INVALID_LABEL, LABEL_RANGE
from affbatch.files import write_text_atomically

#: Decimals written per value: the annotation tools' joysticks resolve far less than 1e-6.
DECIMALS = 6


def _format(x: float) -> str:
    if x == INVALID_LABEL:
        return "-5"
    # "+ 0.0" turns -0.0 into 0.0 so that a file never holds "-0.000000".
    return f"{round(x, DECIMALS) + 0.0:.{DECIMALS}f}"


def write_label_file(path: Path, valence, arousal) -> Path:
    """Write one label file; NaN or -5 in either series marks the frame invalid in both.

    The file is written to a temporary name in the same folder and renamed, so a reader never
    sees half a file. Values must lie in [-1, 1] (the label range) or be NaN / -5.

    Raises:
        LabelError: the series differ in length, or a value is outside [-1, 1].
    """
    path = Path(path)
    v = np.asarray(valence, np.float64).ravel()
    a = np.asarray(arousal, np.float64).ravel()
    if v.shape != a.shape:
        raise LabelError(f"{path}: valence has {v.size} frames and arousal {a.size}; they must be equally long")
    invalid = np.isnan(v) | np.isnan(a) | (v == INVALID_LABEL) | (a == INVALID_LABEL)
    for name, x in (("valence", v), ("arousal", a)):
        bad = ~invalid & ((x < LABEL_RANGE[0]) | (x > LABEL_RANGE[1]))
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise LabelError(f"{path}: frame {k}: {name} {x[k]} is outside [-1, 1] (and is not NaN or -5)")
    lines = [",".join(HEADER)]
    lines += [
        "-5,-5" if bad else f"{_format(x)},{_format(y)}"
        for x, y, bad in zip(v.tolist(), a.tolist(), invalid.tolist(), strict=True)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(path, "\n".join(lines) + "\n")
    return path
