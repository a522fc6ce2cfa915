"""Writing results: JSON (everything) and Markdown tables (what a reader compares)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path


def rate(s: dict | None, digits: int = 1) -> str:
    """``median (min–max)`` of a summary from ``measure.summarise``; ``–`` when missing."""
    if not s:
        return "–"
    return f"{s['fps_median']:.{digits}f} ({s['fps_min']:.{digits}f}–{s['fps_max']:.{digits}f})"


def number(x: float | None, digits: int = 1, suffix: str = "") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}{suffix}"


def percent(x: float | None) -> str:
    if x is None or not math.isfinite(x):
        return "–"
    return f"{100 * x:.1f}%" if x < 0.1 else f"{100 * x:.0f}%"


def memory(m: dict | None) -> str:
    """Peak RSS (+ increase during the measurement), and GPU peak when there is one, in MiB."""
    if not m:
        return "–"
    text = f"{m['rss_peak_mib']:.0f} (+{m['rss_delta_mib']:.0f})"
    if "gpu_peak_mib" in m:
        text += f", GPU {m['gpu_peak_mib']:.0f}"
    return text


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub Markdown table; cells are ``str()``-ed and ``|`` in them escaped."""

    def cell(x: object) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = [
        "| " + " | ".join(cell(h) for h in headers) + " |",
        "|" + "---|" * len(headers),
    ]
    for row in rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, the table {len(headers)} columns: {row!r}")
        lines.append("| " + " | ".join(cell(c) for c in row) + " |")
    return "\n".join(lines) + "\n"


def _jsonable(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None  # JSON has no inf/nan
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, Path):
        return str(x)
    if hasattr(x, "item"):  # numpy scalars
        return x.item()
    return x


def write_suite(out: Path, suite: str, machine: dict, results: object, table: str) -> tuple[Path, Path]:
    """``out/SUITE.json`` (machine + results) and ``out/SUITE.md`` (the table)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{suite}.json", out / f"{suite}.md"
    json_path.write_text(json.dumps(_jsonable({"machine": machine, "results": results}), indent=2) + "\n")
    md_path.write_text(table)
    return json_path, md_path
