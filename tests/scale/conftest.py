"""A real local Ray cluster for the tests marked ``ray``: ``ray start --head`` on 127.0.0.1 with
2 CPUs, in a temporary folder of its own, stopped at the end by the process ids of that folder's
processes and their children (never ``ray stop``, which kills every Ray on the machine)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.scale.crash import alive, children

ROOT = Path(__file__).resolve().parents[2]
#: CI sets it where the ``ray`` extra is installed: a missing Ray is then a failure, not a skip.
REQUIRE_RAY = os.environ.get("AFFBATCH_REQUIRE_RAY") == "1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cluster_pids(temp_dir: str) -> set[int]:
    """Processes whose command line names ``temp_dir`` (gcs_server, raylet, monitor...), and
    their descendants (agents and workers, which rename themselves ``ray::...``)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if temp_dir.encode() in (entry / "cmdline").read_bytes():
                    found.add(int(entry.name))
            except OSError:
                continue
    frontier = list(found)
    while frontier:
        kids = set(children(frontier.pop())) - found
        found |= kids
        frontier += kids
    return found


def _stop(temp_dir: str) -> None:
    pids = cluster_pids(temp_dir)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 5
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        pids = {p for p in pids if alive(p)}
        if not pids:
            return


@dataclass
class RayCluster:
    address: str  # 127.0.0.1:PORT
    temp_dir: str

    def actors(self) -> dict[int, str]:
        """{pid: process title} of this cluster's affbatch actors (``ray::VideoActor.score``
        while scoring)."""
        out = {}
        for pid in cluster_pids(self.temp_dir):
            try:
                title = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").strip()
            except OSError:
                continue
            if title.startswith("ray::VideoActor"):
                out[pid] = title
        return out


@pytest.fixture(scope="session")
def ray_cluster():
    """A 2-CPU Ray head on 127.0.0.1, started for this session."""
    ray_bin = Path(sys.executable).with_name("ray")
    try:
        import ray  # noqa: F401
    except ImportError:
        if REQUIRE_RAY:
            pytest.fail("AFFBATCH_REQUIRE_RAY=1 but Ray is not installed (pip install -e '.[ray]')")
        pytest.skip("Ray is not installed (pip install -e '.[ray]')")
    # Short: Ray's socket paths below it have a length limit.
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    port = _free_port()
    # Without it Ray resolves 127.0.0.1 to the machine's outward address (FACTS.md); the
    # drivers (the tests' subprocesses) need it too. PYTHONPATH: the actors import this tree.
    env = {
        **os.environ,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
        "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
    }
    saved = {k: os.environ.get(k) for k in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "PYTHONPATH")}
    os.environ.update({k: env[k] for k in saved})
    start = [
        str(ray_bin),
        "start",
        "--head",
        "--node-ip-address=127.0.0.1",
        f"--port={port}",
        "--num-cpus=2",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--temp-dir={temp_dir}",
        "--object-store-memory=200000000",
    ]
    try:
        done = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        yield RayCluster(f"127.0.0.1:{port}", temp_dir)
    finally:
        _stop(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
