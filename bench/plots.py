"""PNG plots of the suites' results (matplotlib's Agg canvas: no display needed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

PIPELINE, NAIVE, FLOOR = "#1f77b4", "#ff7f0e", "black"


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    return path


def faces_plot(results: dict, machine: dict, path: Path) -> Path:
    """Per model: pipeline vs naive frames/s per clip, the compute floor and the speed-up; and
    every rate as a fraction of the floor."""
    summary = results["summary"]
    models = list(dict.fromkeys(s["model"] for s in summary))
    fig = Figure(figsize=(5.2 * (len(models) + 1), 5.0), layout="constrained")
    axes = fig.subplots(1, len(models) + 1)
    width = 0.38
    for ax, model in zip(axes, models, strict=False):
        rows = [s for s in summary if s["model"] == model]
        x = np.arange(len(rows))
        pipe = [s["pipeline_fps"] for s in rows]
        naive = [s["naive_fps"] for s in rows]
        ax.bar(x - width / 2, pipe, width, color=PIPELINE, label="affbatch score")
        ax.bar(x + width / 2, naive, width, color=NAIVE, label="naive (batch 1, full res)")
        for i, s in enumerate(rows):
            ax.plot(
                [i - 0.45, i + 0.45],
                [s["floor_fps"]] * 2,
                color=FLOOR,
                lw=1.5,
                label="compute floor" if i == 0 else None,
            )
            ax.annotate(
                f"×{s['speedup']:.1f}",
                (i - width / 2, s["pipeline_fps"]),
                ha="center",
                va="bottom",
                fontsize=8,
                xytext=(0, 2),
                textcoords="offset points",
            )
        ax.set_xticks(x, [s["clip"].replace(" ", "\n", 1) for s in rows], fontsize=8)
        ax.set_ylabel("frames/s (30 fps output)")
        ax.set_ylim(0, max(max(pipe), max(naive), max(s["floor_fps"] for s in rows)) * 1.15)
        ax.set_title(f"{model}: end to end (×: score / naive)", fontsize=10)
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
        ax.grid(axis="y", alpha=0.3)
    ax = axes[-1]
    x = np.arange(len(summary) // max(len(models), 1))
    step = 0.8 / (2 * len(models))
    for m, model in enumerate(models):
        rows = [s for s in summary if s["model"] == model]
        for k, (key, colour, label) in enumerate(
            (("pipeline_of_floor", PIPELINE, "score"), ("naive_of_floor", NAIVE, "naive"))
        ):
            offset = -0.4 + step * (2 * m + k + 0.5)
            ax.bar(
                x[: len(rows)] + offset,
                [100 * s[key] for s in rows],
                step,
                color=colour,
                alpha=1.0 if m == 0 else 0.55,
                hatch=None if m == 0 else "//",
                label=f"{label}, {model}",
            )
    ax.set_xticks(x, [s["clip"].replace(" ", "\n", 1) for s in summary if s["model"] == models[0]], fontsize=8)
    ax.set_ylabel("% of the compute floor")
    ax.set_title("fraction of the compute floor\n(peak fp32 rate / FLOPs per frame)", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(_machine_line(machine), fontsize=9)
    return _save(fig, path)


UNITS = {"detector": "frames/s", "prior": "faces/s", "vgg16-fc6": "faces/s", "gru-attention": "track frames/s"}


def models_plot(rows: list[dict], machine: dict, path: Path) -> Path:
    """Items/s against batch size for each stage and runtime (bars when a stage has one batch
    size), with the stage's compute floor dotted."""
    stages = list(dict.fromkeys(r["stage"] for r in rows))
    fig = Figure(figsize=(4.4 * len(stages), 4.8), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(stages)))
    styles = {"onnxruntime": ("-", "o"), "torch": ("--", "s")}
    for ax, stage in zip(axes, stages, strict=True):
        mine = [r for r in rows if r["stage"] == stage]
        colours = {inp: f"C{i}" for i, inp in enumerate(dict.fromkeys(r["input"] for r in mine))}
        batches = sorted({r["batch"] for r in mine})
        if len(batches) == 1:
            runtimes = list(dict.fromkeys(r["runtime"] for r in mine))
            med = np.array([r["fps_median"] for r in mine])
            lo = med - np.array([r["fps_min"] for r in mine])
            hi = np.array([r["fps_max"] for r in mine]) - med
            ax.bar(range(len(mine)), med, yerr=[lo, hi], capsize=3, color=[colours[r["input"]] for r in mine])
            ax.set_xticks(range(len(mine)), [f"{r['runtime']}\n{r['input']}" for r in mine], fontsize=8)
            ax.set_xlabel(f"batch {batches[0]}" + ("" if len(runtimes) == len(mine) else ", per input"))
        else:
            for runtime, inp in dict.fromkeys((r["runtime"], r["input"]) for r in mine):
                pts = sorted(
                    (r["batch"], r["fps_median"], r["fps_min"], r["fps_max"])
                    for r in mine
                    if (r["runtime"], r["input"]) == (runtime, inp)
                )
                b, med, lo, hi = (np.array(v, dtype=float) for v in zip(*pts, strict=True))
                line, marker = styles.get(runtime, (":", "^"))
                ax.errorbar(
                    b, med, yerr=[med - lo, hi - med], marker=marker, capsize=3, ls=line, color=colours[inp],
                    label=f"{runtime}, {inp}",
                )  # fmt: skip
            ax.set_xscale("log", base=2)
            ax.set_xticks(batches, [str(b) for b in batches])
            ax.minorticks_off()
            ax.set_xlabel("batch size")
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
        floors = sorted({round(r["floor_fps"]) for r in mine})
        for floor in floors:
            ax.axhline(floor, color="black", lw=0.9, alpha=0.7, ls=":")
        ax.set_title(f"{stage} (dotted: floor {', '.join(map(str, floors))})", fontsize=10)
        ax.set_ylabel(UNITS.get(stage, "items/s"))
        ax.set_ylim(0, max(max(r["fps_max"] for r in mine), max(floors)) * 1.1)
        ax.grid(alpha=0.3)
    fig.suptitle(_machine_line(machine), fontsize=9)
    return _save(fig, path)


def decode_plot(rows: list[dict], machine: dict, path: Path) -> Path:
    """Decoded output frames/s and ``score --model none`` frames/s per clip, --fps 30 and native."""
    labels = list(dict.fromkeys(f"{r['resolution']}\n{r['source_fps']} fps\n{r['decoder']}" for r in rows))
    fig = Figure(figsize=(max(6.0, 1.3 * len(labels)), 4.2), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(labels))
    width = 0.2
    bars = [
        ("decode", "30", "C0", "decode, --fps 30"),
        ("decode", "native", "C1", "decode, native"),
        ("score", "30", "C2", "score --model none, --fps 30"),
        ("score", "native", "C3", "score --model none, native"),
    ]
    for k, (what, mode, colour, label) in enumerate(bars):
        values = []
        for lab in labels:
            r = next(
                (
                    r
                    for r in rows
                    if f"{r['resolution']}\n{r['source_fps']} fps\n{r['decoder']}" == lab and r["fps_mode"] == mode
                ),
                None,
            )
            values.append(r[what]["fps_median"] if r else np.nan)
        ax.bar(x + (k - 1.5) * width, values, width, color=colour, label=label)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("output frames/s")
    ax.set_title("decoding, median of the runs", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=4, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle(_machine_line(machine), fontsize=9)
    return _save(fig, path)


def _machine_line(machine: dict) -> str:
    floor = machine.get("floor_gflops")
    rate = f", fp32 peak {floor:.0f} GFLOP/s" if floor else ""
    return f"{machine.get('device', 'cpu')}, {machine.get('cpus')} CPUs{rate} — {machine.get('date', '')}"
