"""TensorRT optimisation profiles from the dynamic axes: (min, opt, max) shapes for each input.

A TensorRT engine accepts each dynamic dimension within the range it was built for and is tuned
for the ``opt`` size. Ranges are given per axis *name* (the names of ``dynamic_axes``), so one
setting covers every input that shares an axis (``frames`` and ``hidden`` both have ``batch``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from engines.base import EngineError

#: Ranges of the axis names affbatch's models use. batch/faces: a decode batch's crops reach
#: 64 frames x 10 faces, but larger batches are split (see :func:`split_axis`), so 256 bounds
#: the workspace, not the caller. time: the affect model's windows are 80 frames (the paper's
#: training length). height/width: the detector sees frames shrunk to 640 on the longer side.
DEFAULT_RANGES: dict[str, tuple[int, int, int]] = {
    "batch": (1, 32, 256),
    "faces": (1, 32, 256),
    "time": (1, 80, 256),
    "height": (32, 384, 640),
    "width": (32, 640, 640),
}
_OTHER_MAX = 256

Shape = tuple[int, ...]
Profile = dict[str, tuple[Shape, Shape, Shape]]


def _axes(spec: Mapping[int, str] | Sequence[int], rank: int, input_name: str) -> dict[int, str]:
    axes = dict(spec) if isinstance(spec, Mapping) else {int(a): f"{input_name}_{a}" for a in spec}
    return {a % rank: str(n) for a, n in axes.items()}


def axis_range(name: str, example_size: int, overrides: Mapping[str, tuple[int, int, int]]) -> tuple[int, int, int]:
    if name in overrides:
        return tuple(overrides[name])  # type: ignore[return-value]
    if name in DEFAULT_RANGES:
        return DEFAULT_RANGES[name]
    size = max(1, example_size)
    return 1, size, max(size, _OTHER_MAX)


def make_profile(
    input_names: Sequence[str],
    example_shapes: Sequence[Shape],
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None,
    overrides: Mapping[str, tuple[int, int, int]] | None = None,
) -> Profile:
    """For each input, its (min, opt, max) shapes: static dimensions as in the example, dynamic
    ones from the ranges of their axis names (``overrides``, else :data:`DEFAULT_RANGES`)."""
    overrides = overrides or {}
    profile: Profile = {}
    for name, shape in zip(input_names, example_shapes, strict=True):
        shape = tuple(int(s) for s in shape)
        lo, opt, hi = list(shape), list(shape), list(shape)
        for axis, axis_name in _axes((dynamic_axes or {}).get(name, {}), len(shape), name).items():
            lo[axis], opt[axis], hi[axis] = axis_range(axis_name, shape[axis], overrides)
        profile[name] = (tuple(lo), tuple(opt), tuple(hi))
    return profile


def profile_json(profile: Profile) -> dict[str, list[list[int]]]:
    """The profile as JSON-friendly lists (part of the engine cache key)."""
    return {name: [list(s) for s in shapes] for name, shapes in sorted(profile.items())}


def split_axis(
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: Mapping[str, Mapping[int, str] | Sequence[int]] | None,
) -> str | None:
    """The axis name at dimension 0 of every input and output, if there is one: calls larger
    than the profile's max along it can be split into chunks and the outputs concatenated."""
    names = set()
    for tensor in (*input_names, *output_names):
        spec = (dynamic_axes or {}).get(tensor)
        axes = dict(spec) if isinstance(spec, Mapping) else {}
        if 0 not in axes:
            return None
        names.add(axes[0])
    return names.pop() if len(names) == 1 else None


def check_shapes(profile: Profile, shapes: Mapping[str, Shape], split: str | None = None) -> None:
    """EngineError naming the input, dimension and range when a shape is outside the profile
    (dimension 0 may exceed its max when ``split`` is set: the caller splits the call)."""
    for name, shape in shapes.items():
        lo, _, hi = profile[name]
        if len(shape) != len(lo):
            raise EngineError(f"input {name!r}: {len(shape)} dimensions {tuple(shape)}, the engine takes {len(lo)}")
        for axis, (size, a, b) in enumerate(zip(shape, lo, hi, strict=True)):
            if split is not None and axis == 0 and size >= a:
                continue
            if not a <= size <= b:
                fixed = " (a static dimension)" if a == b else ""
                raise EngineError(
                    f"input {name!r} dimension {axis} is {size}; this engine was built for {a}..{b}{fixed}: "
                    "compile with EngineOptions(profiles={axis_name: (min, opt, max)}) to widen it"
                )
