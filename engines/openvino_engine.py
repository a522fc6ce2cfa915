"""OpenVINO: the CPU runtime that runs bf16 on AMX / AVX512-BF16, from the same cached ONNX graph.

Measured on a 2-core Xeon with AMX (issue 13): RetinaFace 2.4x and VGG-16 3.3x faster in bf16
than ONNX Runtime in fp32; in fp32 it is a little slower than ONNX Runtime. Its CPU plugin's
default inference precision on such CPUs is bf16, so the precision is always set explicitly
(``INFERENCE_PRECISION_HINT``): fp32 means fp32. Compiled models are kept in the engine cache
(``<cache root>/openvino``, one verified entry per graph, precision, OpenVINO version and CPU),
as TensorRT plans are. Shapes stay dynamic (as exported): one compiled model serves every batch
and frame size.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from engines.base import Engine, EngineError, RuntimeUnavailable

if TYPE_CHECKING:
    import torch

log = logging.getLogger("engines")

#: Our precision names -> OpenVINO's element types for ``INFERENCE_PRECISION_HINT``.
HINTS = {"fp32": "f32", "bf16": "bf16"}


def available() -> str | None:
    """None when OpenVINO imports here, else why not."""
    try:
        import openvino  # noqa: F401
    except ImportError as e:
        return f"openvino not importable ({e}): pip install openvino"
    return None


def version() -> str | None:
    try:
        import openvino as ov
    except ImportError:
        return None
    return ov.get_version().split("-")[0]


def check_precision(precision: str, device: str) -> None:
    """RuntimeUnavailable unless OpenVINO can run ``precision`` on ``device`` here."""
    from engines.cpuinfo import detect

    if device != "cpu":
        raise RuntimeUnavailable(f"openvino: runs on the CPU here, not {device}; use --device cpu")
    if precision not in HINTS:
        raise RuntimeUnavailable(f"openvino runs fp32 or bf16 on the CPU, not {precision}")
    if precision == "bf16" and (why := detect().bf16_unavailable()):
        raise RuntimeUnavailable(f"bf16: {why}; use fp32")


def config(precision: str, threads: int) -> dict[str, object]:
    """The compile options every affbatch model gets: the precision asked for (never the CPU's
    default), one stream of ``threads`` threads for the lowest latency per batch, no pinning:
    the decoding thread and the pre-processing share the same cores."""
    return {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        "INFERENCE_NUM_THREADS": threads,
        "ENABLE_CPU_PINNING": False,
    }


def key_fields(onnx_sha256: str, precision: str, threads: int) -> dict:
    """What a compiled model depends on (its engine-cache key)."""
    from engines.cpuinfo import detect

    cpu = detect()
    return {
        "runtime": "openvino",
        "onnx_sha256": onnx_sha256,
        "openvino": version(),
        "precision": precision,
        "threads": threads,
        "cpu": cpu.model,
        "features": cpu.features,
    }


class OpenVinoEngine(Engine):
    """A compiled OpenVINO model over an ONNX file; one infer request, reused."""

    runtime = "openvino"

    def __init__(
        self,
        onnx_path: Path,
        input_names: Sequence[str],
        output_names: Sequence[str],
        device: str = "cpu",
        precision: str = "fp32",
        cache_folder: Path | None = None,
        threads: int | None = None,
    ):
        if why := available():
            raise RuntimeUnavailable(f"openvino: {why}")
        check_precision(precision, device)
        import openvino as ov

        from engines.cpuinfo import threads as cpuinfo_threads

        self.onnx_path, self.device, self.precision = Path(onnx_path), device, precision
        self.input_names, self.output_names = tuple(input_names), tuple(output_names)
        self.threads = threads or cpuinfo_threads()
        core = ov.Core()
        settings = config(precision, self.threads)
        if cache_folder is None:
            compiled = core.compile_model(str(self.onnx_path), "CPU", settings)
        else:
            compiled = self._cached(core, Path(cache_folder), settings)
        actual = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if actual != HINTS[precision]:  # the plugin overrode the hint: say so rather than run it
            raise EngineError(f"openvino compiled for {actual}, not {precision}")
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        outputs = {name for port in compiled.outputs for name in port.get_names()}
        if missing := [n for n in self.output_names if n not in outputs]:
            raise EngineError(f"openvino: the graph has no output {missing[0]!r} (it has {sorted(outputs)})")
        self._ports = [compiled.output(name) for name in self.output_names]

    def _cached(self, core, folder: Path, settings: dict):
        from engines.cache import onnx_sha256
        from engines.engine_cache import load_or_build

        fields = key_fields(onnx_sha256(self.onnx_path), self.precision, self.threads)
        built: list = []

        def build() -> bytes:
            compiled = core.compile_model(str(self.onnx_path), "CPU", settings)
            built.append(compiled)
            return compiled.export_model().getvalue()

        blob, _ = load_or_build(folder, fields, build, kind="openvino")
        if built:
            return built[0]
        try:
            return core.import_model(io.BytesIO(blob), "CPU", settings)
        except Exception as exc:  # a blob another OpenVINO build wrote: compile it again
            log.warning("cached OpenVINO model did not import (%s): compiling it again", exc)
            load_or_build(folder, fields, build, kind="openvino", force=True)
            return built[0]

    def run_numpy(self, arrays: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        feed = {name: np.ascontiguousarray(a) for name, a in zip(self.input_names, arrays, strict=True)}
        # share_inputs: no copy in; outputs are copied out (the request's buffers are reused).
        result = self.request.infer(feed, share_inputs=True)
        return tuple(np.asarray(result[port]) for port in self._ports)

    def run_torch(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        import torch

        arrays = [x.detach().cpu().numpy() for x in inputs]
        return [torch.from_numpy(y) for y in self.run_numpy(arrays)]
