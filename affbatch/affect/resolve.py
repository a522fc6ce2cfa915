"""What ``--model``, ``--detector``, ``--runtime``, ``--device`` and ``--precision`` turn into:
a resolved :class:`~engines.Placement` and an ``Analyzer``.

``--model``: ``auto`` or ``prior`` -> the embedded expression prior (said once on stderr);
``vggface-gru-attn`` alone -> an error saying how to get weights; a checkpoint folder -> that
model; ``none`` -> no detector and no model (frame rows only, face columns null); ``faces`` ->
the detector and tracks only (valence/arousal null; what ``affbatch-train prepare`` runs).
``--detector``: ``auto`` -> the packaged RetinaFace MobileNet-0.25; a path -> a RetinaFace
checkpoint in retinaface-pytorch's layout (ResNet-50).

Engine errors become affbatch's own here, once: a runtime, device or precision this machine
cannot run is a usage error (exit status 2); a model that does not compile is a one-line
failure (exit status 1).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from affbatch.affect.base import Analyzer, NoFaces
from affbatch.errors import AffbatchError, UsageError

if TYPE_CHECKING:
    from engines import Placement

log = logging.getLogger(__name__)

#: ``--model`` values that are not checkpoint paths.
PRIOR_NAMES = ("auto", "prior")
NO_MODEL = "none"
FACES_ONLY = "faces"


def resolve_placement(runtime: str = "auto", device: str = "auto", precision: str = "auto") -> Placement:
    """``auto`` resolved for this machine, once per run; every model of the run uses the result."""
    import engines

    try:
        return engines.resolve(runtime, device, precision)
    except engines.EngineError as exc:
        raise UsageError(f"--runtime/--device/--precision: {exc}") from None


def resolve_analyzer(
    model: str, detector: str = "auto", placement: Placement | None = None, align: bool = False
) -> Analyzer:
    """The analyzer for ``--model``/``--detector`` on ``placement`` (default: ``auto`` resolved)."""
    if model == NO_MODEL:
        return NoFaces()
    from engines import EngineError, RuntimeUnavailable

    placement = placement or resolve_placement()
    try:
        return _analyzer(model, detector, placement, align)
    except RuntimeUnavailable as exc:  # e.g. a precision or provider this machine lacks
        raise UsageError(f"--runtime {placement.runtime} --device {placement.device}: {exc}") from None
    except EngineError as exc:  # a model that does not compile: one line, exit status 1
        raise AffbatchError(f"models on {placement.runtime} ({placement.device}): {exc}") from None


def _analyzer(model: str, detector: str, placement: Placement, align: bool) -> Analyzer:
    from affbatch.affect.analyzer import FaceAffectAnalyzer
    from affbatch.affect.runners import AffectIdentity, FrameAffect, SequenceAffect

    # Under --precision auto the detector runs fp32 (in the faster fp32 runtime): RetinaFace
    # declares no bf16 runtime, because the affect models' gates fail on bf16 boxes (its __init__).
    face_detector = _detector(detector, placement)
    if model == FACES_ONLY:
        return FaceAffectAnalyzer(face_detector, None, align=align)
    if model in PRIOR_NAMES:
        from affbatch.models.expression_prior import load_expression_prior

        prior = load_expression_prior()
        identity = AffectIdentity(prior.name, prior.weights_sha256, prior.description)
        affect = FrameAffect(prior, identity, *_where(placement))
    else:
        from affbatch.models.checkpoint import resolve_affect_model
        from affbatch.models.vggface_gru_attn import ATTENTION_LENGTH, SEQUENCE_LENGTH

        module, checkpoint = resolve_affect_model(model, "cpu")
        trained = "" if checkpoint.trained else " (UNTRAINED init, for benchmarks only)"
        identity = AffectIdentity(
            f"{checkpoint.architecture}:{checkpoint.path.name}",
            checkpoint.sha256,
            f"{checkpoint.architecture} from {checkpoint.path}{trained}",
        )
        affect = SequenceAffect(module, identity, SEQUENCE_LENGTH, ATTENTION_LENGTH, *_where(placement))
    return FaceAffectAnalyzer(face_detector, affect, align=align)


def _detector(detector: str, placement: Placement):
    from affbatch.faces.detector import FaceDetector
    from engines import EngineError

    if detector == "auto":
        return FaceDetector.default(runtime=placement.runtime, device=placement.device, precision=placement.precision)
    try:
        return FaceDetector.from_checkpoint(
            detector, runtime=placement.runtime, device=placement.device, precision=placement.precision
        )
    except FileNotFoundError:
        raise UsageError(f"--detector {detector}: file not found") from None
    except EngineError:  # a RuntimeError, but not the checkpoint's fault
        raise
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UsageError(f"--detector {detector}: not a RetinaFace checkpoint ({exc})") from None


def _where(placement: Placement) -> tuple[str, str, str]:
    return placement.runtime, placement.device, placement.precision
