"""PyNvVideoCodec (``--decoder nvcodec``) on a GPU: the decoder contract against PyAV.

Marked ``gpu``: it needs an NVIDIA GPU and PyNvVideoCodec (``scripts/gpu_check.py`` carries its
wheel to the GPU check's machine). Not run by the session that wrote it (no GPU there): the
pixel bounds are DALI-on-CPU's measured differences from PyAV (max 8, mean < 1) with room for
NVDEC's own YUV->RGB conversion, to be tightened with the first measured figures.
"""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest

from affbatch.errors import DecodeFailure
from affbatch.video import decoders
from affbatch.video.framerate import select_frames
from affbatch.video.probe import probe
from tests.support.coded_clips import constant_rate_pts, read_code, write_coded_clip

pytestmark = pytest.mark.gpu

MAX_DIFF = 16
MEAN_DIFF = 2.0


@pytest.fixture(scope="module")
def nvcodec():
    pytest.importorskip("PyNvVideoCodec", reason="PyNvVideoCodec not installed (pip install 'affbatch[gpu]')")
    return decoders.get_decoder("nvcodec", "cuda:0")


def both(nvcodec, path, wanted=None, batch_size=7):
    info = probe(path)
    if wanted is None:
        slots, _ = select_frames(info, "30")
        wanted = np.unique(slots)
    ours = list(nvcodec.frames(info, np.asarray(wanted), batch_size))
    pyav = list(decoders.get_decoder("pyav").frames(info, np.asarray(wanted), batch_size))
    for b in ours:
        assert b.is_tensor and b.device.startswith("cuda")
    a = np.concatenate([b.images for b in pyav]).astype(int)
    b = np.concatenate([b.host_images() for b in ours]).astype(int)
    assert np.concatenate([x.source_index for x in ours]).tolist() == list(wanted)
    return info, a, b


@pytest.mark.parametrize(
    ("name", "codec", "options", "size", "rotation"),
    [
        ("h264.mp4", "libx264", {}, (96, 64), 0),
        ("bframes.mkv", "libx264", {"bf": "3"}, (96, 64), 0),
        ("hevc.mp4", "libx265", {"x265-params": "log-level=error"}, (96, 64), 0),
        ("vp9.webm", "libvpx-vp9", {}, (96, 64), 0),
        ("odd.mp4", "libx264", {}, (65, 49), 0),
        ("turned.mp4", "libx264", {}, (64, 48), 90),
    ],
)
def test_nvcodec_gives_pyavs_frames(nvcodec, tmp_path, name, codec, options, size, rotation):
    path = write_coded_clip(
        tmp_path / name,
        constant_rate_pts(25, F(25), F(1, 1000)),
        F(1, 1000),
        codec=codec,
        options=options,
        width=size[0],
        height=size[1],
        noise_seed=1,
        rotation=rotation,
    )
    info, a, b = both(nvcodec, path)
    assert a.shape == b.shape == (len(a), info.height, info.width, 3)
    assert [read_code(np.rot90(im, -rotation // 90)) for im in b] == list(range(len(b)))
    assert np.abs(a - b).max() <= MAX_DIFF and np.abs(a - b).mean() <= MEAN_DIFF


def test_only_wanted_frames_and_the_decoder_is_reused(nvcodec, tmp_path):
    first = write_coded_clip(tmp_path / "a.mp4", list(range(40)), F(1, 30), options={"bf": "2"})
    second = write_coded_clip(tmp_path / "b.mp4", list(range(12)), F(1, 30), width=80, height=32)
    _, _, b = both(nvcodec, first, [0, 3, 4, 17, 38, 39], batch_size=4)
    assert [read_code(im) for im in b] == [0, 3, 4, 17, 38, 39]
    session = nvcodec._decoder
    _, _, b = both(nvcodec, second, [1, 11])
    assert nvcodec._decoder is session  # reconfigured, not re-created
    assert [read_code(im) for im in b] == [1, 11]


def test_a_file_nvdec_cannot_read_fails_alone(nvcodec, tmp_path):
    path = write_coded_clip(tmp_path / "x.mp4", list(range(10)), F(1, 30))
    info = probe(path)
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    with pytest.raises(DecodeFailure) as failure:
        list(nvcodec.frames(info, np.arange(5), 4))
    assert str(failure.value).startswith(f"{path}: NVDEC") and "\n" not in str(failure.value)
    good = write_coded_clip(tmp_path / "y.mp4", list(range(6)), F(1, 30))
    _, _, b = both(nvcodec, good, [0, 5])
    assert [read_code(im) for im in b] == [0, 5]
