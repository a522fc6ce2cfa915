"""One contract, run against every decoder backend available here (on this CPU machine: PyAV,
and DALI's CPU backend where DALI is installed).

Frames must come out upright (display matrix applied), in RGB, at the displayed size (odd
sizes included), numbered by presentation order, and only the frames asked for. DALI's CPU
backend decodes VP8, VP9 and MJPEG only: for every other codec it must fail with a reason that
says so and names what works; its tests use VP9 where PyAV's use H.264.
"""

from __future__ import annotations

from fractions import Fraction as F

import numpy as np
import pytest

from affbatch.errors import DecodeFailure
from affbatch.video import decoders
from affbatch.video.probe import probe
from tests.support.coded_clips import code_frame, constant_rate_pts, read_code, write_coded_clip
from tests.support.reference import ffmpeg_frames

AVAILABLE = [name for name, why in decoders.availability().items() if why is None]

# (file name, codec, pix_fmt, extra encoder options): H.264, HEVC, VP9, MPEG-4 Part 2, MJPEG in
# mp4, mov, mkv, avi, webm; AV1 and MPEG-2 too.
FORMATS = [
    ("h264.mp4", "libx264", "yuv420p", {}),
    ("h264-bframes.mkv", "libx264", "yuv420p", {"bf": "3"}),
    ("hevc.mp4", "libx265", "yuv420p", {"x265-params": "log-level=error"}),
    ("hevc.mkv", "libx265", "yuv420p", {"x265-params": "log-level=error"}),
    ("vp9.webm", "libvpx-vp9", "yuv420p", {}),
    ("mpeg4.avi", "mpeg4", "yuv420p", {}),
    ("mpeg4.mp4", "mpeg4", "yuv420p", {}),
    ("mjpeg.mov", "mjpeg", "yuvj420p", {}),
    ("mjpeg.avi", "mjpeg", "yuvj422p", {}),
    ("h264.mov", "libx264", "yuv420p", {}),
    ("av1.mkv", "libsvtav1", "yuv420p", {}),
    ("mpeg2.mpg", "mpeg2video", "yuv420p", {}),
]


@pytest.fixture(params=AVAILABLE)
def decoder(request):
    return decoders.get_decoder(request.param)


def decode_all(decoder, path, wanted=None, batch_size=7):
    info = probe(path)
    wanted = np.arange(info.frames) if wanted is None else np.asarray(wanted)
    batches = list(decoder.frames(info, wanted, batch_size))
    for b in batches:
        assert isinstance(b.images, np.ndarray)  # CPU backends give host frames
    return info, batches


def cpu_only_codecs(decoder) -> tuple[str, ...] | None:
    """The codecs a backend decodes on this CPU, None for all of FFmpeg's."""
    if decoder.name == "dali":
        from affbatch.video.decoders.dali import CPU_CODECS

        return CPU_CODECS
    return None


def common(decoder, codec: str = "libx264", container: str = "mp4") -> tuple[str, str]:
    """(encoder, file suffix) for a test that is not about the codec: VP9/webm where the backend
    takes no H.264 on the CPU."""
    return ("libvpx-vp9", "webm") if cpu_only_codecs(decoder) else (codec, container)


def expect_codec_refused(decoder, path) -> None:
    info = probe(path)
    with pytest.raises(DecodeFailure) as failure:
        list(decoder.frames(info, np.arange(info.frames), 7))
    message = str(failure.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert info.codec in message
    if info.codec in ("h264", "hevc", "av1", "mpeg4"):
        assert "only on a GPU" in message and "VP8, VP9 and MJPEG" in message
    assert "--decoder pyav" in message


@pytest.mark.parametrize(("name", "codec", "pix_fmt", "options"), FORMATS, ids=[f[0] for f in FORMATS])
def test_codecs_and_containers(decoder, tmp_path, name, codec, pix_fmt, options):
    path = write_coded_clip(
        tmp_path / name, constant_rate_pts(20, F(25), F(1, 25)), F(1, 25), codec=codec, pix_fmt=pix_fmt, options=options
    )
    codecs = cpu_only_codecs(decoder)
    if codecs is not None and probe(path).codec not in codecs:
        expect_codec_refused(decoder, path)
        return
    info, batches = decode_all(decoder, path)
    assert info.frames == 20 and (info.width, info.height) == (64, 48)
    assert [len(b) for b in batches] == [7, 7, 6]
    source = np.concatenate([b.source_index for b in batches])
    assert source.tolist() == list(range(20))
    images = np.concatenate([b.images for b in batches])
    assert images.shape == (20, 48, 64, 3) and images.dtype == np.uint8
    assert [read_code(im) for im in images] == list(range(20))
    times = np.concatenate([b.time_s for b in batches])
    np.testing.assert_allclose(times, np.arange(20) / 25, atol=1e-9)


def test_only_wanted_frames_in_order(decoder, tmp_path):
    codec, _ = common(decoder)
    options = {"bf": "2"} if codec == "libx264" else {}
    path = write_coded_clip(
        tmp_path / "c.mkv", constant_rate_pts(40, F(30), F(1, 1000)), F(1, 1000), codec=codec, options=options
    )
    wanted = [0, 3, 4, 17, 38, 39]
    _, batches = decode_all(decoder, path, wanted, batch_size=4)
    assert [len(b) for b in batches] == [4, 2]
    source = np.concatenate([b.source_index for b in batches]).tolist()
    assert source == wanted
    assert [read_code(im) for b in batches for im in b.images] == wanted


def test_pixels_match_ffmpeg(decoder, ffmpeg, tmp_path):
    codec, suffix = common(decoder)
    path = write_coded_clip(
        tmp_path / f"p.{suffix}", list(range(6)), F(1, 30), codec=codec, noise_seed=1, width=96, height=64
    )
    _, batches = decode_all(decoder, path)
    ours = np.concatenate([b.images for b in batches]).astype(int)
    reference = ffmpeg_frames(ffmpeg, path, 96, 64, fps30=False, pix_fmt="rgb24").astype(int)
    assert ours.shape == reference.shape
    # Same bitstream decoder; the YUV->RGB conversion may round differently across FFmpeg versions.
    assert np.abs(ours - reference).mean() < 1.0
    assert np.abs(ours - reference).max() <= 8


@pytest.mark.parametrize("rotation", [90, 180, 270])
def test_rotation_is_applied_like_ffmpeg(decoder, ffmpeg, tmp_path, rotation):
    codec, suffix = common(decoder)
    path = write_coded_clip(
        tmp_path / f"r.{suffix}", list(range(5)), F(1, 30), codec=codec, width=64, height=48, rotation=rotation
    )
    info, batches = decode_all(decoder, path)
    assert info.rotation == rotation
    w, h = (48, 64) if rotation in (90, 270) else (64, 48)
    assert (info.width, info.height) == (w, h)
    ours = np.concatenate([b.images for b in batches]).astype(int)
    reference = ffmpeg_frames(ffmpeg, path, w, h, fps30=False, pix_fmt="rgb24").astype(int)
    assert ours.shape == reference.shape == (5, h, w, 3)
    assert np.abs(ours - reference).mean() < 1.0
    # And the picture really turned: unturning it gives back the coded frame.
    upright = np.rot90(ours[2], -rotation // 90)
    assert read_code(upright) == 2
    assert np.abs(upright - code_frame(2, 64, 48).astype(int)).mean() < 8


@pytest.mark.parametrize(
    ("name", "codec", "pix_fmt", "size"),
    [
        ("odd.webm", "libvpx-vp9", "yuv420p", (65, 49)),
        ("odd.mov", "mjpeg", "yuvj444p", (63, 47)),
        ("odd.mkv", "libx264", "yuv444p", (65, 49)),
        ("odd.avi", "mpeg4", "yuv420p", (66, 50)),
    ],
)
def test_odd_sizes(decoder, ffmpeg, tmp_path, name, codec, pix_fmt, size):
    w, h = size
    path = write_coded_clip(tmp_path / name, list(range(4)), F(1, 30), codec=codec, pix_fmt=pix_fmt, width=w, height=h)
    codecs = cpu_only_codecs(decoder)
    if codecs is not None and probe(path).codec not in codecs:
        expect_codec_refused(decoder, path)
        return
    info, batches = decode_all(decoder, path)
    assert (info.width, info.height) == (w, h)
    ours = np.concatenate([b.images for b in batches]).astype(int)
    assert ours.shape == (4, h, w, 3)
    assert [read_code(im) for im in ours] == [0, 1, 2, 3]
    reference = ffmpeg_frames(ffmpeg, path, w, h, fps30=False, pix_fmt="rgb24").astype(int)
    assert np.abs(ours - reference).mean() < 1.0


def test_unknown_decoder_is_a_usage_error():
    from affbatch.errors import UsageError

    with pytest.raises(UsageError, match="choose one of auto, pyav, dali, nvcodec"):
        decoders.get_decoder("gstreamer")
    with pytest.raises(UsageError, match="nvcodec.*(GPU|not installed)"):
        decoders.get_decoder("nvcodec", "cpu")
