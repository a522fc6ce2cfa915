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
from affbatch.errors import UsageError

log = logging.getLogger(__name__)

#: ``--model`` values that are not checkpoint paths.
PRIOR_NAMES = ("auto", "prior")
NO_MODEL = "none"


def resolve_analyzer(model: str, detector: str = "auto", runtime: str = "auto", device: str = "auto") -> Analyzer:
    if model == NO_MODEL:
        return NoFaces()
    from engines import EngineError
    from engines.build import resolve_device, resolve_runtime

    if runtime == "tensorrt":
        raise UsageError("--runtime tensorrt: not in this version (it arrives with TensorRT engines); use auto")
    try:
        device = resolve_device(device)
        runtime = resolve_runtime(runtime, device)
    except EngineError as exc:
        raise UsageError(f"--runtime/--device: {exc}") from None

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
    from affbatch.models.detector import FaceDetector

    if detector == "auto":
        return FaceDetector.default(runtime=runtime, device=device)
    try:
        return FaceDetector.from_checkpoint(detector, runtime=runtime, device=device)
    except FileNotFoundError:
        raise UsageError(f"--detector {detector}: file not found") from None
    except (ValueError, KeyError, RuntimeError) as exc:
        raise UsageError(f"--detector {detector}: not a RetinaFace checkpoint ({exc})") from None
