"""``affbatch plot``: a picture of the traces of a video, readable at a glance.

Per video, one row: valence over time and arousal over time (stacked, sharing the time axis),
one colour per face track, and the tracks on the valence-arousal plane (Russell's circumplex:
axes through 0, the unit circle, range [-1, 1]). Frames where a track has no face are NaN in its
series, so its line breaks there; frames without any face at all are also shaded grey. The title
names the video; the subtitle the model, detector and frame rate from the traces' metadata.

Several videos in the file and no ``video`` given: one row per video, the first
``MAX_VIDEOS`` that have a face, in the file's order (the caller is told which were left out).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from affbatch.errors import AffbatchError, UsageError
from affbatch.output import traces
from affbatch.video.framerate import PAPER_FPS

#: Rows (videos) in one picture when no ``--video`` is given.
MAX_VIDEOS = 4
NEEDED_COLUMNS = ("video", "frame", "time_s", "track", "valence", "arousal")
#: Russell's (1980) circumplex: what each quadrant of the plane holds, for orientation.
QUADRANTS = {(1, 1): "excited, happy", (-1, 1): "angry, afraid", (-1, -1): "sad, bored", (1, -1): "calm, content"}


@dataclass
class VideoSeries:
    """One video's traces on a regular frame axis.

    ``time_s`` (n,): time of output frame k (NaN for a frame with no row, which ``affbatch
    score`` never writes); ``tracks``: track id -> (valence (n,), arousal (n,)) float64, NaN where
    that track has no face; ``no_face`` (n,) bool: frames where no track has a face.
    """

    video: str
    time_s: np.ndarray
    tracks: dict[int, tuple[np.ndarray, np.ndarray]]
    no_face: np.ndarray

    @property
    def frames(self) -> int:
        return len(self.time_s)


@dataclass
class PlotSummary:
    out: Path
    plotted: list[str]
    videos: list[str]  # every video in the file, in order
    without_faces: list[str] = field(default_factory=list)  # videos left out: no face anywhere

    @property
    def left_out(self) -> list[str]:
        return [v for v in self.videos if v not in self.plotted]


def read_traces(path: Path) -> pa.Table:
    """The columns the plot needs; one-line errors for a missing or foreign file."""
    return traces.read_traces(path, NEEDED_COLUMNS)


def video_names(table: pa.Table) -> list[str]:
    """Videos in the order they first appear in the file."""
    return list(dict.fromkeys(pc.unique(table["video"]).to_pylist()))


def video_series(table: pa.Table, video: str) -> VideoSeries:
    """``video``'s rows of a traces table as regular per-frame series (see ``VideoSeries``)."""
    rows = table.filter(pc.equal(table["video"], video))
    frame = rows["frame"].to_numpy().astype(np.int64)
    n = int(frame.max()) + 1 if len(frame) else 0
    time_s = np.full(n, np.nan)
    time_s[frame] = rows["time_s"].to_numpy()
    has_face = pc.is_valid(rows["track"]).to_numpy(zero_copy_only=False)
    track = rows["track"].fill_null(-1).to_numpy()
    valence = rows["valence"].cast(pa.float64()).to_numpy(zero_copy_only=False)
    arousal = rows["arousal"].cast(pa.float64()).to_numpy(zero_copy_only=False)
    no_face = np.ones(n, bool)
    no_face[frame[has_face]] = False
    tracks = {}
    for t in sorted(set(track[has_face].tolist())):
        mine = has_face & (track == t)
        v, a = np.full(n, np.nan), np.full(n, np.nan)
        v[frame[mine]], a[frame[mine]] = valence[mine], arousal[mine]
        tracks[int(t)] = (v, a)
    return VideoSeries(video, time_s, tracks, no_face)


def _metadata(table: pa.Table) -> dict[str, str]:
    raw = table.schema.metadata or {}
    out = {}
    for k, v in raw.items():
        value = v.decode("utf-8", "replace")
        try:  # non-string values are stored as JSON
            decoded = json.loads(value)
            value = value if isinstance(decoded, dict | list) else str(decoded)
        except ValueError:
            pass
        out[k.decode("utf-8", "replace")] = value
    return out


def subtitle(metadata: dict[str, str]) -> str:
    parts = []
    if metadata.get("model"):
        parts.append(f"model: {metadata['model']}")
    if metadata.get("detector"):
        parts.append(f"faces: {metadata['detector']}")
    if metadata.get("fps"):
        parts.append(f"--fps {metadata['fps']}")
    return " · ".join(parts) or "no model recorded in the file's metadata"


def plot_traces(traces: Path, out: Path, video: str | None = None, max_videos: int = MAX_VIDEOS) -> PlotSummary:
    """Draw ``video`` (or the first ``max_videos`` videos with a face) of ``traces`` into ``out``.

    The format follows ``out``'s extension (png, svg, pdf, ...). Raises ``AffbatchError`` with a
    one-line message for a missing or foreign file, an unknown video, or nothing to draw.
    """
    traces, out = Path(traces), Path(out)
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    suffix = out.suffix.lower().lstrip(".")
    if suffix not in formats:
        raise UsageError(f"--out {out}: give a file name ending in .png (or {', '.join(sorted(formats))})")
    table = read_traces(traces)
    videos = video_names(table)
    if not videos:
        raise AffbatchError(f"{traces}: holds no video")
    if video is not None:
        if video not in videos:
            raise AffbatchError(f"--video {video!r}: not in {traces}; its videos: {_listing(videos)}")
        series = [video_series(table, video)]
        if not series[0].tracks:
            raise AffbatchError(f"{video}: no face in any of its {series[0].frames} frames: nothing to plot")
        without = []
    else:
        series, without = [], []
        for name in videos:
            s = video_series(table, name)
            if not s.tracks:
                without.append(name)
            elif len(series) < max_videos:
                series.append(s)
        if not series:
            raise AffbatchError(f"{traces}: no face in any frame of its {len(videos)} video(s): nothing to plot")
    if not out.parent.is_dir():
        raise AffbatchError(f"--out {out}: folder {out.parent} does not exist")
    fig = draw(series, subtitle(_metadata(table)))
    try:
        fig.savefig(out, dpi=100)
    except OSError as exc:
        raise AffbatchError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    return PlotSummary(out, [s.video for s in series], videos, without)


def _listing(names: list[str], limit: int = 10) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", … ({len(names)} in all)" if len(names) > limit else "")


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges where ``mask`` is True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist(), strict=True))


def draw(series: list[VideoSeries], note: str):
    """The figure: a row per video (valence and arousal over time, and the plane)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Circle, Patch

    fig = Figure(figsize=(13, 3.9 * len(series) + 0.5), layout="constrained")
    rows = fig.subfigures(len(series), 1, squeeze=False)[:, 0]
    colours = [f"C{i}" for i in range(10)]
    for sub, s in zip(rows, series, strict=True):
        grid = sub.add_gridspec(2, 2, width_ratios=(3.2, 1.0))
        ax_v = sub.add_subplot(grid[0, 0])
        ax_a = sub.add_subplot(grid[1, 0], sharex=ax_v)
        ax_p = sub.add_subplot(grid[:, 1])
        t = s.time_s
        step = float(np.nanmedian(np.diff(t))) if s.frames > 1 else 1 / float(PAPER_FPS)
        for ax, name in ((ax_v, "valence"), (ax_a, "arousal")):
            for start, stop in _runs(s.no_face):
                ax.axvspan(t[start] - step / 2, t[stop - 1] + step / 2, color="0.88", lw=0, zorder=0)
            ax.axhline(0, color="0.5", lw=0.8, zorder=1)
            ax.set_ylim(-1.05, 1.05)
            ax.set_ylabel(name)
            ax.grid(alpha=0.3)
        for i, (v, a) in enumerate(s.tracks.values()):
            colour = colours[i % len(colours)]
            for ax, y in ((ax_v, v), (ax_a, a)):
                ax.plot(t, y, color=colour, lw=1.2, zorder=2)
                alone = _isolated(y)
                if alone.any():  # a point between gaps draws no line: mark it
                    ax.plot(t[alone], y[alone], ".", color=colour, ms=4, zorder=2)
            ax_p.plot(v, a, color=colour, lw=0.6, alpha=0.45)
            ax_p.plot(v, a, ".", color=colour, ms=2.5, alpha=0.6)
        handles = [Patch(color=colours[i % len(colours)], label=f"track {track}") for i, track in enumerate(s.tracks)]
        if s.no_face.any():
            handles.append(Patch(color="0.88", label=f"no face ({int(s.no_face.sum())} frames)"))
        # Above the valence axes, right-aligned: never over the data.
        ax_v.legend(
            handles=handles,
            fontsize=8,
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            ncol=min(len(handles), 6),
            frameon=False,
            borderaxespad=0.2,
        )
        ax_a.set_xlabel("time (s)")
        ax_v.tick_params(labelbottom=False)
        ax_v.set_xlim(np.nanmin(t) - step, np.nanmax(t) + step)
        ax_p.axhline(0, color="0.4", lw=0.8)
        ax_p.axvline(0, color="0.4", lw=0.8)
        ax_p.add_patch(Circle((0, 0), 1.0, fill=False, ls="--", lw=0.8, color="0.6"))
        for (sx, sy), label in QUADRANTS.items():
            ax_p.text(
                0.97 * sx,
                0.97 * sy,
                label,
                ha="right" if sx > 0 else "left",
                va="top" if sy > 0 else "bottom",
                fontsize=7,
                color="0.45",
            )
        ax_p.set_xlim(-1.05, 1.05)
        ax_p.set_ylim(-1.05, 1.05)
        ax_p.set_aspect("equal")
        ax_p.set_xlabel("valence")
        ax_p.set_ylabel("arousal")
        ax_p.set_title("valence-arousal plane", fontsize=9)
        faces = sum(int(np.isfinite(v).sum()) for v, _ in s.tracks.values())
        sub.suptitle(
            f"{s.video} — {len(s.tracks)} track{'s' if len(s.tracks) != 1 else ''}, {faces} faces in {s.frames} frames",
            fontsize=11,
            fontweight="bold",
        )
    fig.suptitle(note, fontsize=9, color="0.3")
    return fig


def _isolated(y: np.ndarray) -> np.ndarray:
    """Finite values whose neighbours are both missing (or outside the series)."""
    ok = np.isfinite(y)
    before = np.concatenate([[False], ok[:-1]])
    after = np.concatenate([ok[1:], [False]])
    return ok & ~before & ~after
