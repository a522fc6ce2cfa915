"""``python -m bench scale``: its options and its table (no timing asserted; figures come from
the program)."""

from __future__ import annotations

from bench.__main__ import parse
from bench.scale import markdown


def test_options():
    args = parse(["scale", "--max-workers", "3", "--ray", "127.0.0.1:6379"])
    assert args.suites == ["scale"] and args.max_workers == 3 and args.ray == "127.0.0.1:6379"


def test_table():
    row = {"fps_median": 20.0, "fps_min": 18.0, "fps_max": 21.0, "startup_s": 2.5}
    results = {
        "cpus": 2,
        "clip": "640x360, 1 face, 30 fps",
        "configs": [
            {**row, "config": "1 process, every core", "vs_one_process": 1.0, "video_hours_per_hour": 0.667},
            {
                **row,
                "config": "2 worker process(es), 1 core(s) each",
                "vs_one_process": 1.1,
                "video_hours_per_hour": 0.7,
            },
        ],
        "per_video": {
            "videos": 16,
            "frames_per_video": 15,
            "here_s_per_video": 0.5,
            "worker_s_per_video": 0.503,
            "overhead_s_per_video": 0.003,
        },
    }
    table = markdown(results, {"date": "today", "device": "cpu"}, 5).splitlines()
    assert "| 2 worker process(es), 1 core(s) each | 20.0 (18.0–21.0) | 1.10x | 0.70 | 2.5 |" in table
    assert table[-1].endswith("+3 ms per video.")
