"""``alignkit arena models=A,B[,C...] votes=arena.db``: load the models, open the votes, serve the page.

Binds 127.0.0.1 unless ``host=`` says otherwise. To let other people vote, either run it on a machine they
reach with ``host=0.0.0.0 token=SECRET`` and send them ``http://HOST:PORT/?token=SECRET``, or keep it on
127.0.0.1 behind a reverse proxy that terminates TLS (nginx, Caddy) and forwards to it; the event stream
needs the proxy's buffering off (the server sends ``X-Accel-Buffering: no`` for nginx).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time

from alignkit.errors import AlignkitError


def prompt_pool(prompts: str, world) -> list[str]:
    """The prompts of the Random prompt button: the world's train prompts, a file's, or none."""
    if prompts == "none":
        return []
    if prompts == "world":
        return [t.prompt for t in world.tasks("train")]
    from alignkit.data.sources import load_records

    records = load_records(prompts, "prompt")
    bad = next((i for i, r in enumerate(records) if not isinstance(r["prompt"], str)), None)
    if bad is not None:
        raise AlignkitError(f"{prompts}: record {bad + 1}: the arena's prompts are strings (one user turn)")
    return [r["prompt"].strip() for r in records]


def build_arena(cfg, world):
    """The :class:`~alignkit.serve.arena.app.Arena` of an ArenaConfig: models loaded, workers started, store open."""
    from alignkit.models.load import load_model
    from alignkit.serve.arena.app import Arena
    from alignkit.serve.arena.engine import ModelWorker, parse_models
    from alignkit.serve.arena.store import Store
    from alignkit.training.setup import resolve_device

    specs = parse_models(cfg.models, cfg.few_shot)
    device = str(resolve_device(cfg.device))
    pool = prompt_pool(cfg.prompts, world)
    few_shot = None
    if world is not None:
        def few_shot(question: str) -> str:
            from alignkit.world import FEW_SHOT_DEFAULT

            return world.few_shot_prompt(question, shots=cfg.shots, seed=cfg.seed, categories=FEW_SHOT_DEFAULT)
    store = Store(cfg.votes)
    workers = []
    try:
        for i, spec in enumerate(specs):
            model, tokenizer = load_model(spec.path, dtype=cfg.dtype, device=device,
                                          trust_remote_code=cfg.trust_remote_code)
            workers.append(ModelWorker(spec, model, tokenizer, max_new_tokens=cfg.max_new_tokens,
                                       temperature=cfg.temperature, batch_size=cfg.batch_size, seed=cfg.seed + i,
                                       few_shot=few_shot))
    except BaseException:
        for w in workers:
            w.close()
        store.close()
        raise
    return Arena(workers, store, pool, max_prompt_chars=cfg.max_prompt_chars, token=cfg.token, seed=cfg.seed)


def serve(cfg, world) -> None:
    import uvicorn

    from alignkit.serve.arena.app import LOOPBACK_HOSTS, create_app

    hosts = tuple(cfg.allowed_hosts) or (LOOPBACK_HOSTS if cfg.host in ("127.0.0.1", "localhost", "::1") else ("*",))
    arena = build_arena(cfg, world)
    counts = arena.store.counts()
    where = f"http://{cfg.host}:{cfg.port}/" + (f"?token={cfg.token}" if cfg.token else "")
    print(f"arena: {len(arena.workers)} models, {counts['votes']} votes so far in {cfg.votes}; open {where} "
          f"(leaderboard: /leaderboard; Ctrl-C stops)", file=sys.stderr, flush=True)
    try:
        uvicorn.run(create_app(arena, allowed_hosts=hosts), host=cfg.host, port=cfg.port, log_level=cfg.log_level,
                    timeout_graceful_shutdown=5)
    finally:
        votes = arena.store.counts()["votes"]
        arena.close()
        print(f"arena: stopped; {votes} votes in {cfg.votes}", file=sys.stderr, flush=True)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server started just after)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def spawn(args: list[str], port: int, *, threads: int = 1, timeout: float = 180.0) -> subprocess.Popen:
    """``alignkit arena ARGS port=PORT`` in a process of its own with ``threads`` torch threads (for scripts,
    benchmarks and tests that drive a real server); returns once ``/api/health`` answers on 127.0.0.1, or
    raises RuntimeError with the end of its error output. The caller stops it (``terminate``, ``kill``)."""
    import httpx

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    log = tempfile.TemporaryFile(mode="w+")  # a file, not a pipe nobody reads: a chatty server never blocks
    proc = subprocess.Popen([sys.executable, "-m", "alignkit", "arena", *args, f"port={port}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=log, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the arena exited with {proc.returncode}: {log.read()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError(f"the arena did not answer within {timeout:.0f} s")
