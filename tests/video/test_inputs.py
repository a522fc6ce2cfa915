"""PATH arguments -> videos: recursion, recognition, order, duplicates and names."""

from __future__ import annotations

import os
import shutil
from fractions import Fraction as F

import av

from affbatch.video.inputs import collect_videos
from tests.support.coded_clips import code_frame, write_coded_clip


def clip(path):
    """A small real video at ``path`` (any name: written as Matroska, then renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = write_coded_clip(path.with_name(path.name + ".tmp.mkv"), list(range(3)), F(1, 30))
    return tmp.rename(path)


def png(path):
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "rgb24"
        frame = av.VideoFrame.from_ndarray(code_frame(1, 32, 32), format="rgb24")
        for packet in [*stream.encode(frame), *stream.encode()]:
            container.mux(packet)


def names(arguments):
    return [v.name for v in collect_videos([str(a) for a in arguments])]


def test_folders_are_searched_recursively_in_path_order(tmp_path):
    root = tmp_path / "videos"
    for rel in ["b.mp4", "a/z.mkv", "a/b/c.webm", "B.MOV", "a.avi"]:
        clip(root / rel)
    assert names([root]) == ["B.MOV", "a/b/c.webm", "a/z.mkv", "a.avi", "b.mp4"]


def test_extension_recognition_and_probing(tmp_path):
    root = tmp_path / "mixed"
    clip(root / "video.mp4")
    clip(root / "no_extension")  # a real video without extension: found by probing
    shutil.copy(root / "video.mp4", root / "odd.dat")  # unknown extension: probed too
    shutil.copy(root / "video.mp4", root / "notes.txt")  # known non-video extension: skipped
    (root / "readme").write_text("not a video")  # probed, not a video: skipped
    (root / "labels.csv").write_text("valence,arousal\n")
    (root / ".hidden.mp4").write_bytes(b"")  # hidden files are skipped
    png(root / "still.bin2")  # a still image (PNG data): not a video
    assert names([root]) == ["no_extension", "odd.dat", "video.mp4"]


def test_broken_video_with_video_extension_is_kept_to_fail_later(tmp_path):
    root = tmp_path / "v"
    root.mkdir()
    (root / "broken.mp4").write_bytes(b"garbage")
    (root / "empty.mkv").write_bytes(b"")
    assert names([root]) == ["broken.mp4", "empty.mkv"]


def test_files_keep_the_name_given_and_nonexistent_paths_are_kept(tmp_path, monkeypatch):
    f = clip(tmp_path / "x" / "one.mp4")
    monkeypatch.chdir(tmp_path)  # restored after the test
    assert names(["x/one.mp4", "missing.mp4"]) == ["x/one.mp4", "missing.mp4"]
    assert collect_videos(["x/one.mp4"])[0].path == f.relative_to(tmp_path)


def test_duplicates_are_removed_keeping_the_first(tmp_path):
    root = tmp_path / "v"
    a = clip(root / "a.mp4")
    clip(root / "sub" / "b.mp4")
    os.symlink(a, root / "link.mp4")  # the same file under another name
    os.link(a, tmp_path / "hard.mp4")  # and a hard link
    assert names([root / "a.mp4", root, tmp_path / "hard.mp4", root / "sub"]) == [
        str(root / "a.mp4"),
        "sub/b.mp4",
    ]


def test_same_relative_name_in_two_folders_is_made_unique(tmp_path, monkeypatch):
    clip(tmp_path / "day1" / "cam.mp4")
    clip(tmp_path / "day2" / "cam.mp4")
    monkeypatch.chdir(tmp_path)  # restored after the test
    assert names(["day1", "day2/"]) == ["cam.mp4", "day2/cam.mp4"]


def test_order_follows_the_arguments(tmp_path, monkeypatch):
    clip(tmp_path / "z" / "1.mp4")
    clip(tmp_path / "a" / "2.mp4")
    monkeypatch.chdir(tmp_path)  # restored after the test
    assert names(["z", "a"]) == ["1.mp4", "2.mp4"]
