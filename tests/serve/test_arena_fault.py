"""The arena killed with SIGKILL in the middle of a vote load, and restarted on the same file: every vote the
server acknowledged is there, the database is intact, no battle has two votes, and voting goes on."""

import signal
import sqlite3
import threading
import time

import httpx

from alignkit.serve.arena.server import free_port, spawn
from alignkit.serve.arena.simulate import Tally, simulate, voter


def start_server(model_dirs, db, port):
    models = ",".join(f"m{i}={d}" for i, d in enumerate(model_dirs))
    return spawn([f"models={models}", f"votes={db}", "max_new_tokens=6", "batch_size=8"], port, timeout=90)


def test_sigkill_mid_load_loses_no_acknowledged_vote(tmp_path, model_dirs, world):
    db, port = tmp_path / "arena.db", free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(model_dirs, db, port)
    try:
        tally = Tally(target=10**6)
        threads = [threading.Thread(target=voter, args=(url, world.labeller(seed=i), world.oracle, tally),
                                    kwargs={"timeout": 10}, daemon=True) for i in range(8)]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(tally.acknowledged) < 40:
            assert time.monotonic() < deadline and not tally.errors, tally.errors[:3]
            time.sleep(0.01)
        server.send_signal(signal.SIGKILL)  # in the middle of battles and votes
        server.wait()
        with tally.lock:
            tally.target = tally.started  # the voters stop after their current request
        for t in threads:
            t.join(timeout=30)
        acknowledged = list(tally.acknowledged)
        assert tally.errors, "the kill should have broken some requests in flight"

        with sqlite3.connect(db) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {row[0] for row in conn.execute("SELECT battle_id FROM votes")}
            twice = conn.execute("SELECT battle_id FROM votes GROUP BY battle_id HAVING COUNT(*) > 1").fetchall()
            unfinished_votes = conn.execute("SELECT COUNT(*) FROM votes v JOIN battles b ON b.id = v.battle_id "
                                            "WHERE b.finished IS NULL").fetchone()[0]
        missing = set(acknowledged) - stored
        assert not missing, f"{len(missing)} acknowledged votes are not in the database after the kill"
        assert not twice and unfinished_votes == 0 and len(stored) >= len(acknowledged) >= 40

        server = start_server(model_dirs, db, port)  # the same file, reopened as it is
        assert httpx.get(f"{url}/api/health").json()["votes"] == len(stored)
        more = simulate(url, world, voters=2, votes=6, seed=100, timeout=10)
        assert more["errors"] == 0 and more["votes"] == 6
        assert httpx.get(f"{url}/api/health").json()["votes"] == len(stored) + 6
        board = httpx.get(f"{url}/api/leaderboard").json()
        assert board["n_votes"] == len(stored) + 6
    finally:
        server.kill()
        server.wait()
