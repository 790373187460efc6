"""Shared by the arena benchmarks: start `alignkit arena` as its own process and wait until it answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_arena(args: list[str], port: int, *, threads: int = 1, log=None) -> subprocess.Popen:
    """``alignkit arena ARGS port=PORT`` in a new process (``threads`` torch threads); returns once
    /api/health answers, or raises with the end of its error output."""
    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "alignkit", "arena", *args, f"port={port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=log or subprocess.PIPE, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            err = proc.stderr.read()[-2000:] if proc.stderr else ""
            raise RuntimeError(f"the arena exited with {proc.returncode}: {err}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("the arena did not answer within 180 s")
