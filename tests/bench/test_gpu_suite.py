"""The gpu suite's code (what scripts/gpu_check.py runs on the GPU machine), dry-run on the CPU
with PyAV standing in for the GPU decoder: the rows, parity and tables it produces must hold
together, so that the one GPU run it gets does not die on a typo."""

from __future__ import annotations

import numpy as np
import pytest

from bench import gpu


@pytest.mark.slow
def test_gpu_suite_dry_run_on_the_cpu(tmp_path):
    results = gpu.run(tmp_path, 0.5, 1, "cpu", batch_size=8, decoders=("pyav",), resolutions=("360p",))
    assert results["decoders"] == ["pyav"]
    assert [r["clip"] for r in results["rows"]] == ["360p 1 face", "360p 2 faces"]
    for r in results["rows"]:
        assert r["decode"]["fps_median"] > 0 and r["score"]["fps_median"] > 0
        assert r["score"]["frames"] == r["decode"]["frames"] == 15
        # torch on the CPU against ONNX Runtime on the CPU: the same faces, nearly the same numbers.
        assert r["parity"]["same_faces"] and r["parity"]["box_px"] < 1e-2 and r["parity"]["va"] < 1e-3
    text = gpu.markdown(results, {"device": "cpu"}, 1)
    assert text.count("\n| 360p") == 2


def test_churn_samples_memory(tmp_path):
    samples = gpu.churn("pyav", tmp_path, "cpu", clips=6, every=3)
    assert [s["clips"] for s in samples] == [1, 3, 6]
    assert all(np.isfinite(s["rss_mib"]) and s["rss_mib"] > 0 for s in samples)
