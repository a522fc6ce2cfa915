"""Smoke tests of the benchmark helpers (python -m bench): counts, writers, the naive baseline and
the plots on tiny inputs. No timing is asserted: figures come from the program, not from tests."""

from __future__ import annotations

import json
import math
import os
import struct
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from bench import plots, roofline
from bench.__main__ import parse
from bench.faces import summarise_against_naive
from bench.measure import PeakMemory, Stopwatch, summarise
from bench.report import markdown_table, write_suite


def is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and min(struct.unpack(">II", data[16:24])) > 100


def test_flop_counter_is_exact_on_a_tiny_module():
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    conv = 2 * (4 * 8 * 8) * (3 * 3 * 3)  # 2 FLOPs per multiply-add, per output value
    linear = 2 * 256 * 10
    assert roofline.count_flops(module, torch.zeros(1, 3, 8, 8)) == conv + linear
    assert roofline.count_flops(module, torch.zeros(3, 3, 8, 8)) == 3 * (conv + linear)


def test_flop_counter_counts_a_gru_and_grouped_convolutions():
    gru = nn.GRU(4, 3, batch_first=True)
    assert roofline.count_flops(gru, torch.zeros(1, 5, 4)) == 5 * 2 * (4 * 9 + 3 * 9)  # 3 gates
    depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False)
    assert roofline.count_flops(depthwise, torch.zeros(1, 8, 6, 6)) == 2 * 8 * 36 * 9


def test_floor_is_rate_over_work():
    assert roofline.floor_fps(100.0, 2e9) == pytest.approx(50.0)
    assert roofline.floor_fps(100.0, 0) == math.inf


def test_summary_and_markdown_table():
    s = summarise(30, [1.0, 0.5, 2.0])
    assert (s["fps_median"], s["fps_min"], s["fps_max"], s["runs"], s["frames"]) == (30.0, 15.0, 60.0, 3, 30)
    table = markdown_table(("a", "b"), [["1", "x|y"], [2, 3.5]])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| 1 | x\\|y |", "| 2 | 3.5 |"]
    with pytest.raises(ValueError, match="2 columns"):
        markdown_table(("a", "b"), [["1"]])


def test_write_suite_gives_valid_json(tmp_path):
    results = {"fps": np.float32(2.5), "floor": math.inf, "rows": [(1, float("nan"))], "path": tmp_path}
    json_path, md_path = write_suite(tmp_path / "out", "demo", {"cpus": 2}, results, "| t |\n")
    data = json.loads(json_path.read_text())
    assert data == {
        "machine": {"cpus": 2},
        "results": {"fps": 2.5, "floor": None, "rows": [[1, None]], "path": str(tmp_path)},
    }
    assert md_path.read_text() == "| t |\n"


def test_peak_memory_sees_an_allocation():
    import mmap

    # Fresh pages from the kernel: a numpy array may reuse heap pages that earlier tests left
    # resident (glibc raises its mmap threshold after large frees), which RSS would not see grow.
    with PeakMemory() as mem:
        block = mmap.mmap(-1, 16 * 2**20)
        for offset in range(0, len(block), mmap.PAGESIZE):  # touch every page: now resident
            block[offset] = 1
    result = mem.result()
    assert result["rss_peak_mib"] > 0 and block[0] == 1
    if result["rss_reset"]:
        assert result["rss_delta_mib"] >= 12


def test_stopwatch_rates_are_frames_over_gaps_between_finishes():
    watch = Stopwatch()
    memory = {"rss_peak_mib": 1.0, "rss_delta_mib": 0.0, "rss_reset": True}
    watch.done = [
        {"name": name, "status": "ok", "frames": 30, "t": t, "memory": memory}
        for name, t in (("c0", 10.0), ("c1", 11.0), ("c2", 11.5))
    ]
    assert [v["fps"] for v in watch.per_video().values()] == [None, 30.0, 60.0]
    watch.done.append({"name": "c3", "status": "failed", "frames": 0, "t": 12.0, "memory": memory})
    with pytest.raises(RuntimeError, match="c3"):
        watch.per_video()


def test_stopwatch_notes_each_video_through_score(tmp_path):
    from affbatch.pipeline import ScoreOptions
    from affbatch.run import score_run
    from tests.support.coded_clips import write_coded_clip

    clips = [write_coded_clip(tmp_path / f"{i}.mp4", list(range(6)), Fraction(1, 30)) for i in range(2)]
    watch = Stopwatch()
    score_run(clips, tmp_path / "o.arrow", ScoreOptions(model="none"), progress=watch)
    videos = watch.per_video()
    assert list(videos) == [str(c) for c in clips]
    assert videos[str(clips[1])]["frames"] == 6 and videos[str(clips[1])]["fps"] > 0
    assert videos[str(clips[1])]["memory"]["rss_peak_mib"] > 0


def test_quick_options():
    args = parse(["faces", "--quick"])
    assert (args.repeats, args.seconds, args.naive_frames, args.suites) == (3, 1.0, 6, ["faces"])
    assert parse([]).naive_frames is None


def fake_results():
    clips = ["360p 1 face", "360p 2 faces"]
    mem = {"rss_peak_mib": 900.0, "rss_delta_mib": 100.0, "rss_reset": True}
    rate = {"fps_min": 1.0, "fps_max": 3.0, "runs": 3, "memory": mem}
    pipeline = [
        {"clip": c, "model": "none", "decoder": "pyav", "batch": 64, "runtime": "–", "fps_median": 500.0, **rate}
        for c in clips
    ]
    naive = []
    for model in ("prior", "vggface-gru-attn"):
        for i, c in enumerate(clips):
            row = {"clip": c, "model": model, "decoder": "pyav", "batch": 64, "runtime": "onnxruntime"}
            pipeline.append({**row, "fps_median": 40.0, "faces_per_frame": i + 1.0, **rate})
            naive.append({"clip": c, "model": model, "fps_median": 10.0, "faces_per_frame": i + 1.0, **rate})
    flops = {
        "detector": {"360p": 1e9},
        "detector_full": {"360p": 1e9},
        "prior": 1e9,
        "vggface-gru-attn": 4e9,
    }
    summary = summarise_against_naive(pipeline, naive, flops, 100.0, "onnxruntime", [64], ["pyav"])
    return {"flops": flops, "pipeline": pipeline, "naive": naive, "summary": summary}


def test_naive_comparison_and_floor():
    summary = fake_results()["summary"]
    vgg_two = next(s for s in summary if s["model"] == "vggface-gru-attn" and s["clip"] == "360p 2 faces")
    assert vgg_two["speedup"] == pytest.approx(4.0)
    assert vgg_two["gflops_per_frame"] == pytest.approx(9.0)  # detector + 2 faces x 4
    assert vgg_two["floor_fps"] == pytest.approx(100 / 9)
    assert vgg_two["pipeline_of_floor"] == pytest.approx(40 / (100 / 9))
    assert vgg_two["decode_only_fps"] == 500.0


def test_plots_are_pngs(tmp_path):
    machine = {"cpus": 2, "device": "cpu", "floor_gflops": 100.0, "date": "today"}
    assert is_png(plots.faces_plot(fake_results(), machine, tmp_path / "faces.png"))
    rows = [
        {
            "stage": s,
            "input": "96x96 crops",
            "runtime": rt,
            "batch": b,
            "fps_median": 10.0 * b,
            "fps_min": 9.0 * b,
            "fps_max": 11.0 * b,
            "floor_fps": 500.0,
        }
        for s in ("prior", "vgg16-fc6")
        for rt in ("onnxruntime", "torch")
        for b in (1, 32)
    ]
    assert is_png(plots.models_plot(rows, machine, tmp_path / "models.png"))
    decode_rows = [
        {
            "resolution": "360p",
            "source_fps": 30,
            "decoder": "pyav",
            "fps_mode": mode,
            "decode": {"fps_median": 700.0},
            "score": {"fps_median": 500.0},
        }
        for mode in ("30", "native")
    ]
    assert is_png(plots.decode_plot(decode_rows, machine, tmp_path / "decode.png"))


def test_naive_baseline_scores_a_tiny_clip(tmp_path):
    pytest.importorskip("skimage")
    from affbatch.affect.runners import AffectIdentity, FrameAffect
    from affbatch.models.expression_prior import load_expression_prior
    from bench.media import face_clip
    from bench.naive import NaiveScorer

    clip = face_clip(tmp_path / "two.mp4", 640, 360, 1, seconds=3 / 30)
    prior = FrameAffect(load_expression_prior(), AffectIdentity("prior", None, ""), "torch", "cpu")
    scorer = NaiveScorer(prior, runtime="torch")
    result = scorer(clip, limit=2)
    assert result["frames"] == 2 and result["faces"] == 2  # one face per frame, found at full resolution
    assert scorer.detectors[640].options.max_side == 640
    assert all(-1 <= v <= 1 and -1 <= a <= 1 for _, _, v, a in result["outputs"])
    assert result["seconds"] > 0


def test_peak_is_the_best_dense_kernel(monkeypatch):
    """The ceiling is the fastest of torch.mm and ONNX Runtime's MatMul and Conv, each really run;
    the Conv's FLOP count is the convolution's (checked against torch's counter).

    Checked against a measurement made here, not against the module's own arithmetic: a 2048^3
    fp32 product timed with a plain clock (2 n^3 FLOPs). The peak is the best rate, so it is no
    slower than that product's best run, bar the noise of a shared machine (a factor 2); and its fp32
    figure no faster than the cores could go (64 fp32 FLOPs a cycle, two AVX-512 FMA units, at
    6 GHz). Where the CPU has bf16 in hardware its kernels count too, reported apart."""
    import time

    from engines.cpuinfo import detect

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(2048, 2048, generator=g), torch.randn(2048, 2048, generator=g)
    torch.mm(a, b)  # warm-up: thread pool and caches
    best_s = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best_s = min(best_s, time.perf_counter() - t0)
    measured = 2 * 2048**3 / best_s / 1e9

    peak = roofline.peak_gflops(repeats=2)
    kernels = {k["kernel"].split(" ")[0] + " " + k["kernel"].split(" ")[1]: k for k in peak["kernels"]}
    fp32 = {"torch.mm 2048x2048", "onnxruntime MatMul", "onnxruntime Conv"}
    # where the CPU has bf16 in hardware the models may run in it: its kernels count too
    bf16 = {"torch.mm bf16", "openvino bf16"} if detect().bf16_unavailable() is None else set()
    assert set(kernels) == fp32 | bf16
    assert all(0 < k["gflops_min"] <= k["gflops_median"] <= k["gflops_max"] for k in peak["kernels"])
    assert peak["gflops"] >= measured / 2, (peak["gflops"], measured)
    assert kernels["torch.mm 2048x2048"]["gflops_max"] >= measured / 2
    assert set(peak["per_precision"]) == {"fp32"} | ({"bf16"} if bf16 else set())
    assert peak["per_precision"]["fp32"] <= (os.cpu_count() or 1) * 64 * 6.0, peak["per_precision"]
    assert max(peak["per_precision"].values()) == peak["gflops"]
    assert peak["kernel"] in {k["kernel"] for k in peak["kernels"]}
    nb, c, s = (roofline.CONV_SHAPE[k] for k in ("batch", "channels", "size"))
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
    assert roofline.count_flops(conv, torch.zeros(nb, c, s, s)) == 2 * nb * c * c * 9 * s * s


@pytest.mark.parametrize("model", ["prior", "vggface-gru-attn"])
def test_overhead_measures_score_and_its_models_alone_on_the_same_clip(tmp_path, model):
    """bench.overhead's rates, each really run: score with the model and with faces only (every
    frame of the clip scored ok), the detector alone over the clip's decoded frames, and the
    detector then the affect model over its crops."""
    from bench.faces import untrained_checkpoint
    from bench.media import face_clip
    from bench.overhead import measure

    clip = face_clip(tmp_path / "c.mp4", 320, 180, 1, 0.5)
    checkpoint = untrained_checkpoint(tmp_path / "init") if model != "prior" else None
    rates, used = measure(clip, "onnxruntime", "fp32", 8, rounds=2, model=model, checkpoint=checkpoint)
    assert set(rates) == {f"score {model}", "score faces", "models alone", "detector alone"}
    assert all(len(v) == 2 and all(r > 0 for r in v) for v in rates.values())
    assert used["runtime"] == "detector: onnxruntime, affect: onnxruntime"
    assert used["precision"] == "detector: fp32, affect: fp32"


def test_against_scores_with_the_revisions_own_tree(tmp_path):
    """bench.against runs a revision's tree in its own process and refuses an affbatch imported
    from anywhere else (this checkout's folder or an installed copy would time this tree twice)."""
    import subprocess

    from bench.against import export_tree, run_once
    from bench.media import face_clip

    root = Path(__file__).resolve().parents[2]
    if subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout: bench.against compares git revisions")
    tree = export_tree("HEAD", tmp_path / "before")
    clip = face_clip(tmp_path / "c.mp4", 320, 180, 1, 0.5)
    figures = run_once(tree, tmp_path / "cache", clip, clip, "prior", 1, {})
    assert Path(figures["affbatch"]).resolve().is_relative_to(tree.resolve())
    assert len(figures["rates"]) == 1 and figures["rates"][0] > 0
