"""The streamed windows of ``SequenceAffect`` give exactly ``predict_track``'s outputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from affbatch.affect.runners import AffectIdentity, SequenceAffect
from affbatch.models.vggface_gru_attn import ATTENTION_LENGTH, SEQUENCE_LENGTH, VGGFaceGRUAttention


class TinyCNN(torch.nn.Module):
    """A cheap stand-in for VGG-16: the windows are what is tested here, not the trunk."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4, 4096)

    def forward(self, x):
        return torch.relu(self.proj(torch.nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = VGGFaceGRUAttention()
    m.cnn = TinyCNN()
    return m.eval()


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime"])
def test_streamed_windows_equal_predict_track(model, runtime, tmp_path, monkeypatch):
    monkeypatch.setenv("AFFBATCH_CACHE_DIR", str(tmp_path))
    affect = SequenceAffect(model, AffectIdentity("m", None, "m"), SEQUENCE_LENGTH, ATTENTION_LENGTH, runtime)
    rng = np.random.default_rng(1)
    for n in (1, 31, 80, 81, 112, 113, 200, 257):
        frames = rng.uniform(-1, 1, size=(n, 3, 96, 96)).astype(np.float32)
        expected = model.predict_track(frames)
        stream = affect.new_stream()
        # Pushed in uneven chunks, as decode batches deliver them.
        for chunk in np.array_split(np.arange(n), max(1, n // 23)):
            affect.push(stream, affect.features(frames[chunk]))
        got = affect.finish(stream)
        assert got.shape == (n, 2)
        np.testing.assert_allclose(got, expected, atol=2e-5)
        # Bounded memory: never more than a window of features is kept.
        assert len(stream.features) <= SEQUENCE_LENGTH
