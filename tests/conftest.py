"""Shared fixtures: generated media only (never fetched), in per-test temporary folders."""

from __future__ import annotations

import os
import shutil
from fractions import Fraction
from pathlib import Path

import pytest

#: Where CI demands the ffmpeg reference tests instead of letting them skip.
REQUIRE_FFMPEG = os.environ.get("AFFBATCH_REQUIRE_FFMPEG") == "1"
#: Where a GPU machine demands the tests marked ``gpu`` instead of letting them skip.
REQUIRE_GPU = os.environ.get("AFFBATCH_REQUIRE_GPU") == "1"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked ``gpu`` skip without a CUDA device, or fail when AFFBATCH_REQUIRE_GPU=1."""
    if item.get_closest_marker("gpu") is None:
        return
    import torch

    if not torch.cuda.is_available():
        if REQUIRE_GPU:
            pytest.fail(f"AFFBATCH_REQUIRE_GPU=1 but torch {torch.__version__} sees no CUDA device", pytrace=False)
        pytest.skip("needs an NVIDIA GPU (AFFBATCH_REQUIRE_GPU=1 turns this skip into a failure)")


@pytest.fixture(scope="session")
def ffmpeg() -> str:
    """Path of Debian's ffmpeg command-line tool, the reference for frame-rate conversion."""
    path = shutil.which("ffmpeg")
    if path is None:
        if REQUIRE_FFMPEG:
            pytest.fail("ffmpeg is required (AFFBATCH_REQUIRE_FFMPEG=1): apt-get install ffmpeg")
        pytest.skip("ffmpeg not installed (apt-get install ffmpeg)")
    return path


@pytest.fixture
def make_clip(tmp_path: Path):
    """make_clip(name, frames=.., fps=.., **write_coded_clip options) -> Path of a coded clip."""

    # Imported here: PyAV is not needed by the tests that do not make clips (the GPU machine has none).
    from tests.support.coded_clips import constant_rate_pts, write_coded_clip

    def make(name: str, frames: int = 30, fps: Fraction | int = 30, pts=None, time_base=None, **options) -> Path:
        time_base = time_base or 1 / Fraction(fps)
        pts = pts if pts is not None else constant_rate_pts(frames, Fraction(fps), time_base)
        return write_coded_clip(tmp_path / name, pts, time_base, rate=Fraction(fps), **options)

    return make


@pytest.fixture(scope="session", autouse=True)
def private_model_cache(tmp_path_factory):
    """Exported ONNX graphs go to a folder of this test session, not the user's cache."""
    previous = os.environ.get("AFFBATCH_CACHE_DIR")
    os.environ["AFFBATCH_CACHE_DIR"] = str(tmp_path_factory.mktemp("model-cache"))
    yield
    if previous is None:
        os.environ.pop("AFFBATCH_CACHE_DIR", None)
    else:
        os.environ["AFFBATCH_CACHE_DIR"] = previous


@pytest.fixture(scope="session", autouse=True)
def fp32_auto():
    """``auto`` is fp32 in tests (``AFFBATCH_AUTO_PRECISION``), as on a CPU without bf16: the
    tests compare against float32 references, and they must mean the same on every machine.
    The per-model choice of ``auto`` (bf16 where the CPU has it) is tested on its own, with
    the pin removed (tests/engines/test_cpu.py, tests/engines/test_precision_gates.py)."""
    from engines.autotune import PIN_ENV

    previous = os.environ.get(PIN_ENV)
    os.environ[PIN_ENV] = "fp32"
    yield
    if previous is None:
        os.environ.pop(PIN_ENV, None)
    else:
        os.environ[PIN_ENV] = previous


@pytest.fixture(autouse=True)
def seeded_torch():
    """Every test starts from the same global torch RNG state, whatever ran before it (tests
    that build modules or draw tensors without their own seed are then reproducible alone and
    in any order). Only where torch is imported already: a test that needs no torch loads none."""
    import sys

    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(0)


@pytest.fixture(scope="module")
def vggface_model():
    """``vggface-gru-attn`` with seeded random weights, in eval mode: one per test module."""
    import torch

    from affbatch.models.vggface_gru_attn import VGGFaceGRUAttention

    torch.manual_seed(0)
    return VGGFaceGRUAttention().eval()
