"""What ``--model``, ``--detector``, ``--runtime`` and ``--device`` turn into: an ``Analyzer``.

``--model``: ``auto`` or ``prior`` -> the embedded expression prior (said once on stderr);
``vggface-gru-attn`` alone -> an error saying how to get weights; a checkpoint folder -> that
model; ``none`` -> no detector and no model (frame rows only, face columns null).
``--detector``: ``auto`` -> the packaged RetinaFace MobileNet-0.25; a path -> a RetinaFace
checkpoint in retinaface-pytorch's layout (ResNet-50).
"""

from __future__ import annotations

import logging

from affbatch.analysis import Analyzer, NoFaces
from affbatch.errors import AffbatchError, UsageError

log = logging.getLogger(__name__)

#: ``--model`` values that are not checkpoint paths.
PRIOR_NAMES = ("auto", "prior")
NO_MODEL = "none"


def resolve_analyzer(model: str, detector: str = "auto", runtime: str = "auto", device: str = "auto") -> Analyzer:
    if model == NO_MODEL:
        return NoFaces()
    from engines import EngineError, RuntimeUnavailable
    from engines.build import resolve_device, resolve_runtime

    try:
        device = resolve_device(device)
        runtime = resolve_runtime(runtime, device)
    except EngineError as exc:
        raise UsageError(f"--runtime/--device: {exc}") from None
    try:
        return _analyzer(model, detector, runtime, device)
    except RuntimeUnavailable as exc:  # e.g. a precision or provider this machine lacks
        raise UsageError(f"--runtime {runtime} --device {device}: {exc}") from None
    except EngineError as exc:  # a model that does not compile: one line, exit status 1
        raise AffbatchError(f"models on {runtime} ({device}): {exc}") from None


def _analyzer(model: str, detector: str, runtime: str, device: str) -> Analyzer:
    from affbatch.affect import AffectIdentity, FrameAffect, SequenceAffect
    from affbatch.faces import FaceAffectAnalyzer

    face_detector = _detector(detector, runtime, device)
    if model in PRIOR_NAMES:
        from affbatch.models.expression_prior import load_expression_prior

        prior = load_expression_prior()
        identity = AffectIdentity(prior.name, prior.weights_sha256, prior.description)
        affect = FrameAffect(prior, identity, runtime, device)
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
        affect = SequenceAffect(module, identity, SEQUENCE_LENGTH, ATTENTION_LENGTH, runtime, device)
    return FaceAffectAnalyzer(face_detector, affect)


def _detector(detector: str, runtime: str, device: str):
    from affbatch.models.detector import RUNTIMES, FaceDetector
    from engines import EngineError

    if runtime not in RUNTIMES:  # a runtime the detector's module does not take yet: torch on the same device
        log.warning("the face detector runs on torch (%s): it does not take --runtime %s yet", device, runtime)
        runtime = "torch"
    if detector == "auto":
        return FaceDetector.default(runtime=runtime, device=device)
    try:
        return FaceDetector.from_checkpoint(detector, runtime=runtime, device=device)
    except FileNotFoundError:
        raise UsageError(f"--detector {detector}: file not found") from None
    except EngineError:  # a RuntimeError, but not the checkpoint's fault
        raise
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UsageError(f"--detector {detector}: not a RetinaFace checkpoint ({exc})") from None
