"""affbatch: per-frame valence/arousal traces for archives of videos (the Aff-Wild2 method).

    import affbatch

    scorer = affbatch.Scorer(model="prior")          # loads the models once
    for result in scorer.score_many(["videos/"]):    # files and folders
        print(result.name, result.status, result.table.num_rows if result.ok else result.error)

The package, by stage of the data flow: ``video`` (inputs, probe, the 30 fps selection,
decoders), ``faces`` (detector, tracks, crops), ``affect`` (the affect models' runners, the
analyzer, what ``--model`` resolves to), ``models`` (torch modules and packaged weights),
``output`` (traces and manifest, the run store, plots), ``evaluation`` (labels, CCC, eval),
``pipeline`` (the :class:`Scorer`), ``run`` (``affbatch score``: a Scorer into the run store),
``cli``. Importing ``affbatch`` loads none of them (no torch): the names below are imported
when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from affbatch.errors import (
    AffbatchError,
    DecodeFailure,
    LabelError,
    NoVideoStream,
    TruncatedVideo,
    UsageError,
    VideoError,
    VideoOpenFailure,
)

__version__ = "0.1.0"

#: Public names imported on first use: name -> module.
_LAZY = {
    "Scorer": "affbatch.pipeline",
    "ScoreOptions": "affbatch.pipeline",
    "VideoResult": "affbatch.pipeline",
    "score_run": "affbatch.run",
    "RunSummary": "affbatch.run",
    "evaluate": "affbatch.evaluation.evaluate",
    "ccc": "affbatch.evaluation.metrics",
}

if TYPE_CHECKING:
    from affbatch.evaluation.evaluate import evaluate
    from affbatch.evaluation.metrics import ccc
    from affbatch.pipeline import ScoreOptions, Scorer, VideoResult
    from affbatch.run import RunSummary, score_run


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'affbatch' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "AffbatchError",
    "DecodeFailure",
    "LabelError",
    "NoVideoStream",
    "RunSummary",
    "ScoreOptions",
    "Scorer",
    "TruncatedVideo",
    "UsageError",
    "VideoError",
    "VideoOpenFailure",
    "VideoResult",
    "__version__",
    "ccc",
    "evaluate",
    "score_run",
]
