"""DALI against PyAV on the codecs DALI's CPU backend takes, its errors, and ``--decoder auto``.

DALI's CPU backend runs the same libavcodec bitstream decoders as PyAV but converts YUV to RGB
its own way: pixels differ by rounding, within ``DALI_MAX_DIFF`` (measured on these clips, 2026-12:
max 5 VP9, 8 VP8, 6 MJPEG; mean under 1 grey level). The frames selected for 30 fps must be
the same ones, which the codes drawn in each frame show.
"""

from __future__ import annotations

import importlib.util
import os
import re
from fractions import Fraction as F

import numpy as np
import pyarrow as pa
import pytest

from affbatch.errors import DecodeFailure, UsageError
from affbatch.pipeline import Scorer
from affbatch.video import decoders
from affbatch.video.decoders.auto import AutoDecoder, unsupported
from affbatch.video.framerate import select_frames
from affbatch.video.probe import probe
from tests.support.coded_clips import constant_rate_pts, read_code, write_coded_clip

if importlib.util.find_spec("nvidia") is None or importlib.util.find_spec("nvidia.dali") is None:
    # CI installs DALI and sets AFFBATCH_REQUIRE_DALI=1: there a missing DALI fails, never skips.
    if os.environ.get("AFFBATCH_REQUIRE_DALI") == "1":
        pytest.fail("AFFBATCH_REQUIRE_DALI=1 but DALI is not installed (pip install nvidia-dali-cuda130)", False)
    pytest.skip("DALI not installed (pip install 'affbatch[gpu]')", allow_module_level=True)

#: Largest difference of a pixel channel, DALI vs PyAV, in grey levels (see the module docstring).
DALI_MAX_DIFF = 10
DALI_MEAN_DIFF = 1.5

CLIPS = [
    ("vp9.webm", "libvpx-vp9", "yuv420p", (96, 64), 0),
    ("vp8.webm", "libvpx", "yuv420p", (96, 64), 0),
    ("mjpeg.mov", "mjpeg", "yuvj420p", (96, 64), 0),
    ("mjpeg422.mkv", "mjpeg", "yuvj422p", (96, 64), 0),
    ("odd-vp9.webm", "libvpx-vp9", "yuv420p", (65, 49), 0),
    ("odd-mjpeg.mov", "mjpeg", "yuvj444p", (63, 47), 0),
    ("turned-vp9.webm", "libvpx-vp9", "yuv420p", (64, 48), 90),
    ("turned-mjpeg.mkv", "mjpeg", "yuvj420p", (64, 48), 270),
]


@pytest.fixture(scope="module")
def dali():
    return decoders.get_decoder("dali", "cpu")


def coded(tmp_path, name, codec, pix_fmt, size, rotation, frames=25, fps=25):
    return write_coded_clip(
        tmp_path / name,
        constant_rate_pts(frames, F(fps), F(1, 1000)),
        F(1, 1000),
        codec=codec,
        pix_fmt=pix_fmt,
        width=size[0],
        height=size[1],
        noise_seed=1,
        rotation=rotation,
    )


@pytest.mark.parametrize(("name", "codec", "pix_fmt", "size", "rotation"), CLIPS, ids=[c[0] for c in CLIPS])
def test_dali_gives_pyavs_frames(dali, tmp_path, name, codec, pix_fmt, size, rotation):
    path = coded(tmp_path, name, codec, pix_fmt, size, rotation)
    info = probe(path)
    slots, _ = select_frames(info, "30")  # 25 fps -> 30: every source frame, five of them twice
    wanted = np.unique(slots)
    pyav = list(decoders.get_decoder("pyav").frames(info, wanted, 7))
    ours = list(dali.frames(info, wanted, 7))
    assert [len(b) for b in ours] == [len(b) for b in pyav]
    assert np.concatenate([b.source_index for b in ours]).tolist() == wanted.tolist()
    a = np.concatenate([b.images for b in pyav]).astype(int)
    b = np.concatenate([b.images for b in ours]).astype(int)
    assert a.shape == b.shape == (len(wanted), info.height, info.width, 3)
    turns = -rotation // 90
    assert [read_code(np.rot90(im, turns)) for im in b] == wanted.tolist()
    assert np.abs(a - b).max() <= DALI_MAX_DIFF
    assert np.abs(a - b).mean() <= DALI_MEAN_DIFF


def test_one_pipeline_serves_every_video(dali, tmp_path):
    first = coded(tmp_path, "a.webm", "libvpx-vp9", "yuv420p", (64, 48), 0)
    second = coded(tmp_path, "b.mov", "mjpeg", "yuvj420p", (80, 32), 0, frames=9)
    list(dali.frames(probe(first), np.arange(3), 2))
    pipeline = dali._pipeline
    batches = list(dali.frames(probe(second), np.array([1, 4, 8]), 2))
    assert dali._pipeline is pipeline
    assert [read_code(im) for b in batches for im in b.images] == [1, 4, 8]


def test_long_selections_run_in_chunks(dali, tmp_path, monkeypatch):
    """Runs are bounded in bytes: a selection longer than a run is decoded over several runs."""
    from affbatch.video.decoders import dali as dali_module

    path = coded(tmp_path, "long.webm", "libvpx-vp9", "yuv420p", (64, 48), 0, frames=40)
    monkeypatch.setattr(dali_module, "RUN_BYTES", 64 * 48 * 3 * 8)  # 8 frames a run
    wanted = np.array([0, 2, 3, 9, 10, 11, 12, 13, 20, 25, 31, 38, 39])
    batches = list(dali.frames(probe(path), wanted, 4))
    assert [len(b) for b in batches] == [4, 4, 4, 1]
    assert [read_code(im) for b in batches for im in b.images] == wanted.tolist()


def test_h264_on_the_cpu_is_a_clear_error(tmp_path):
    """Through the Scorer: the H.264 file fails alone, with one line saying why and what works;
    the VP9 file beside it is scored."""
    h264 = write_coded_clip(tmp_path / "v.mp4", list(range(10)), F(1, 30))
    vp9 = coded(tmp_path, "w.webm", "libvpx-vp9", "yuv420p", (64, 48), 0)
    results = list(Scorer(model="none", decoder="dali").score_many([h264, vp9]))
    assert [r.status for r in results] == ["failed", "ok"]
    error = results[0].error
    assert "\n" not in error
    assert re.fullmatch(
        r"DALI decodes h264 only on a GPU; on the CPU it takes VP8, VP9 and MJPEG "
        r"\(use --decoder pyav or auto, or a CUDA --device\)",
        error,
    ), error
    assert results[1].table.num_rows == 30


def test_a_file_dali_cannot_read_fails_alone(dali, tmp_path):
    """The file is replaced by garbage after it was probed: DALI's error becomes one line naming
    the file, the pipeline is rebuilt, and the next video decodes."""
    path = coded(tmp_path, "x.webm", "libvpx-vp9", "yuv420p", (64, 48), 0)
    info = probe(path)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(DecodeFailure) as failure:
        list(dali.frames(info, np.arange(5), 4))
    message = str(failure.value)
    assert message.startswith(f"{path}: DALI could not decode it: ") and "\n" not in message
    good = coded(tmp_path, "y.webm", "libvpx-vp9", "yuv420p", (64, 48), 0)
    assert [read_code(im) for b in dali.frames(probe(good), np.arange(4), 4) for im in b.images] == [0, 1, 2, 3]


def test_auto_on_the_cpu_is_pyav():
    assert decoders.get_decoder("auto", "cpu").name == "pyav"


def test_auto_falls_back_to_pyav_per_file_and_says_so(tmp_path, caplog):
    """A GPU decoder (DALI's CPU backend stands in: the logic is the same) that cannot take a
    file: H.264 4:4:4 is refused before trying (NVDEC does not decode it), plain H.264 fails in
    DALI before any frame; both go to PyAV, logged once, listed in the metadata."""
    vp9 = coded(tmp_path, "a.webm", "libvpx-vp9", "yuv420p", (64, 48), 0)
    h264_444 = write_coded_clip(tmp_path / "b.mkv", list(range(6)), F(1, 30), pix_fmt="yuv444p")
    h264 = write_coded_clip(tmp_path / "c.mp4", list(range(6)), F(1, 30))
    assert unsupported(probe(h264_444)) == "NVDEC does not decode h264 in yuv444p"
    assert unsupported(probe(h264)) is None and unsupported(probe(vp9)) is None
    scorer = Scorer(model="none", decoder="pyav")
    scorer.decoder = AutoDecoder(decoders.get_decoder("dali", "cpu"), "cpu", "dali (test)")
    with caplog.at_level("WARNING", logger="affbatch.video.decoders.auto"):
        results = list(scorer.score_many([vp9, h264_444, h264]))
    assert [r.status for r in results] == ["ok", "ok", "ok"]
    fallbacks = scorer.metadata["decoder_fallbacks"]
    assert set(fallbacks) == {str(h264_444), str(h264)}
    assert fallbacks[str(h264_444)] == "NVDEC does not decode h264 in yuv444p"
    assert fallbacks[str(h264)].startswith("dali failed: ") and "only on a GPU" in fallbacks[str(h264)]
    assert len([r for r in caplog.records if "decoded by PyAV instead of dali" in r.getMessage()]) == 1
    # The fallback frames came as torch tensors on the device ("cpu" here), like the GPU's.
    assert all(isinstance(r.table, pa.Table) for r in results)


def test_auto_prefers_nvcodec_then_dali_then_pyav():
    from affbatch.video.decoders.auto import auto_decoder

    made = []

    class Fake(decoders.Decoder):
        def __init__(self, name):
            self.name = name

        def frames(self, info, wanted, batch_size):
            yield from ()

    def make(name, device):
        made.append((name, device))
        return Fake(name)

    chosen = auto_decoder("cuda:1", {"pyav": None, "dali": None, "nvcodec": None}, make)
    assert chosen.name == "nvcodec" and chosen.choice.startswith("nvcodec (preferred")
    chosen = auto_decoder("cuda:1", {"pyav": None, "dali": None, "nvcodec": "not installed"}, make)
    assert chosen.name == "dali" and "nvcodec: not installed" in chosen.choice
    chosen = auto_decoder("cuda:1", {"pyav": None, "dali": "not installed", "nvcodec": "not installed"}, make)
    assert chosen.name == "pyav"
    assert made[-1] == ("pyav", "cuda:1")

    def broken(name, device):  # installed, but its import fails (no driver library)
        if name == "nvcodec":
            raise UsageError("--decoder nvcodec: PyNvVideoCodec cannot load: libnvidia-encode.so.1 missing")
        return make(name, device)

    chosen = auto_decoder("cuda:0", {"pyav": None, "dali": None, "nvcodec": None}, broken)
    assert chosen.name == "dali" and "libnvidia-encode.so.1 missing" in chosen.choice


def test_nvcodec_says_what_it_needs():
    with pytest.raises(UsageError, match="nvcodec"):
        decoders.get_decoder("nvcodec", "cpu")
    from affbatch.video.decoders.nvcodec import NvCodecDecoder

    with pytest.raises(UsageError, match="GPU|PyNvVideoCodec"):
        NvCodecDecoder("cpu")


@pytest.mark.gpu
def test_dali_mixed_backend_gives_pyavs_frames_on_h264(tmp_path):
    path = write_coded_clip(tmp_path / "g.mp4", constant_rate_pts(25, F(25), F(1, 1000)), F(1, 1000), noise_seed=1)
    info = probe(path)
    wanted = np.unique(select_frames(info, "30")[0])
    gpu = decoders.get_decoder("dali", "cuda:0")
    ours = list(gpu.frames(info, wanted, 7))
    assert all(b.is_tensor and b.device.startswith("cuda") for b in ours)
    a = np.concatenate([b.images for b in decoders.get_decoder("pyav").frames(info, wanted, 7)]).astype(int)
    b = np.concatenate([b.host_images() for b in ours]).astype(int)
    assert [read_code(im) for im in b] == wanted.tolist()
    assert np.abs(a - b).max() <= 2 * DALI_MAX_DIFF and np.abs(a - b).mean() <= DALI_MEAN_DIFF


def test_dali_h264_on_the_cpu_through_the_cli(tmp_path):
    """What the user sees: exit status 1, one line per failed file naming what works, no traceback."""
    from typer.testing import CliRunner

    from affbatch.cli import app

    h264 = write_coded_clip(tmp_path / "v.mp4", list(range(10)), F(1, 30))
    out = tmp_path / "o.arrow"
    args = ["score", str(h264), "--model", "none", "--decoder", "dali", "--device", "cpu", "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("failed: ")]
    assert lines == [
        f"failed: {h264}: DALI decodes h264 only on a GPU; on the CPU it takes VP8, VP9 and MJPEG "
        "(use --decoder pyav or auto, or a CUDA --device)"
    ]


def test_fallbacks_reach_the_traces_metadata(tmp_path):
    """Through the run store: the traces file's schema metadata lists the videos PyAV decoded."""
    import json

    import pyarrow.ipc as ipc

    from affbatch.run import score_run

    vp9 = coded(tmp_path, "a.webm", "libvpx-vp9", "yuv420p", (64, 48), 0)
    h264 = write_coded_clip(tmp_path / "b.mp4", list(range(6)), F(1, 30))
    scorer = Scorer(model="none", decoder="pyav")
    scorer.decoder = AutoDecoder(decoders.get_decoder("dali", "cpu"), "cpu", "dali (test)")
    out = tmp_path / "t.arrow"
    summary = score_run([vp9, h264], out, scorer=scorer)
    assert summary.failed == []
    with ipc.open_file(out) as reader:
        metadata = reader.schema.metadata
    fallbacks = json.loads(metadata[b"decoder_fallbacks"])
    assert list(fallbacks) == [str(h264)] and "only on a GPU" in fallbacks[str(h264)]
