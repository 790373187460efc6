"""The arena's HTTP API as a script meets it: a real uvicorn on 127.0.0.1, an HTTP client, hostile input.

Every refused request must answer one JSON line with a 4xx status and leave the database as it was."""

import json
import socket
import sqlite3

import httpx
import pytest
from arena_support import FailingStore, held_arena, real_workers, serving

from alignkit.serve.arena.app import Arena
from alignkit.serve.arena.export import export_votes
from alignkit.serve.arena.simulate import read_stream
from alignkit.serve.arena.store import Store


def events(client: httpx.Client, battle_id: str) -> list[tuple[str, dict]]:
    out, event = [], None
    with client.stream("GET", f"/api/battles/{battle_id}/stream") as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                out.append((event, json.loads(line[5:])))
    return out


def db_rows(path) -> tuple[int, int]:
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM battles").fetchone()[0], db.execute("SELECT COUNT(*) FROM votes").fetchone()[0]


def test_a_battle_streams_both_answers_and_takes_one_vote(tmp_path, model_dirs, world):
    """Real tiny models: the stream carries token pieces of both sides that add up to the final answers."""
    store = Store(tmp_path / "arena.db")
    arena = Arena(real_workers(model_dirs, world), store, [t.prompt for t in world.tasks("train")][:20], seed=3)
    with serving(arena) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/").status_code == 200 and "arena_voter" in client.cookies
        created = client.post("/api/battles", json={"prompt": "  Who is Lopririn?  "}).json()
        assert created["prompt"] == "Who is Lopririn?" and len(created["battle_id"]) == 32
        got = events(client, created["battle_id"])
        assert got[-1][0] == "done" and all(e == "token" for e, _ in got[:-1])
        final = got[-1][1]["answers"]
        for side in "ab":
            streamed = "".join(d["text"] for e, d in got[:-1] if d["side"] == side)
            assert streamed.strip() == final[side]
        shown = client.get(f"/api/battles/{created['battle_id']}").json()
        assert shown["done"] and shown["answers"] == final and shown["vote"] is None and "models" not in shown
        revealed = client.post(f"/api/battles/{created['battle_id']}/vote", json={"vote": "b"}).json()["models"]
        assert revealed["a"] != revealed["b"] and {revealed["a"], revealed["b"]} <= {"m0", "m1", "m2"}
        again = client.post(f"/api/battles/{created['battle_id']}/vote", json={"vote": "a"})
        assert again.status_code == 409 and "already" in again.json()["error"]
        assert client.get(f"/api/battles/{created['battle_id']}").json()["models"] == revealed
        # a random prompt comes from the arena's pool; a replayed stream of a finished battle gives the same answers
        rand = client.post("/api/battles", json={"random": True}).json()
        assert rand["prompt"] in arena.prompts
        assert events(client, created["battle_id"])[-1][1]["answers"] == final
        health = client.get("/api/health").json()
        assert health["ok"] and health["models"] == ["m0", "m1", "m2"] and health["votes"] == 1
    row = store.battle(created["battle_id"])
    assert row["vote"] == "b" and row["voter"] and len(row["fingerprint_a"]) == 64
    assert row["fingerprint_a"] != row["fingerprint_b"] and json.loads(row["sampling"])["a"] == {"mode": "chat", "temperature": 0.7, "max_new_tokens": 6}
    arena.close()


def test_the_model_draw_covers_every_pair_on_both_sides(tmp_path):
    answers = [[f"answer {i}."] for i in range(3)]
    arena = held_arena(tmp_path, answers)
    seen = set()
    for _ in range(60):
        battle = arena.start("Hello?", None)
        seen.add((battle.sides["a"].spec.name, battle.sides["b"].spec.name))
    assert seen == {(a, b) for a in ("w0", "w1", "w2") for b in ("w0", "w1", "w2") if a != b}


BAD_REQUESTS = [
    # (method, path, body (bytes or JSON), expected status, a word of the message)
    ("POST", "/api/battles", {"prompt": ""}, 400, "empty"),
    ("POST", "/api/battles", {"prompt": "   \n "}, 400, "empty"),
    ("POST", "/api/battles", {"prompt": "x" * 4001}, 413, "limit"),
    ("POST", "/api/battles", {"prompt": 12}, 400, "string"),
    ("POST", "/api/battles", {"prompt": "hi", "random": True}, 400, "either"),
    ("POST", "/api/battles", {"random": False}, 400, "random"),
    ("POST", "/api/battles", {"promt": "hi"}, 400, "unknown field"),
    ("POST", "/api/battles", {}, 400, "either"),
    ("POST", "/api/battles", b"{not json", 400, "JSON"),
    ("POST", "/api/battles", b"\xff\xfe", 400, "JSON"),
    ("POST", "/api/battles", b"[1, 2]", 400, "object"),
    ("POST", "/api/battles", b"x" * 70_000, 413, "limit"),
    ("POST", "/api/battles", b"[" * 50_000, 400, "JSON"),
    ("POST", "/api/battles", b'{"prompt": "hi \\ud800"}', 400, "surrogate"),
    ("POST", "/api/battles", b"null", 400, "object"),
    ("GET", "/api/battles/nope", None, 404, "no battle"),
    ("GET", "/api/battles/nope/stream", None, 404, "no battle"),
    ("POST", "/api/battles/nope/vote", {"vote": "a"}, 404, "no battle"),
    ("GET", "/api/battles", None, 405, "not allowed"),
    ("GET", "/api/nothing", None, 404, "no such"),
    ("DELETE", "/api/leaderboard", None, 405, "not allowed"),
]


def test_cross_site_requests_are_refused(tmp_path):
    """A form or a script on another site can send text/plain without asking; a page that rebinds its own
    domain to 127.0.0.1 sends its own Host header. Both are refused, and nothing is written."""
    arena = held_arena(tmp_path)
    with serving(arena) as url, httpx.Client(base_url=url, timeout=10) as client:
        plain = client.post("/api/battles", content=b'{"random": true}', headers={"Content-Type": "text/plain"})
        assert plain.status_code == 415 and "application/json" in plain.json()["error"]
        rebound = client.get("/api/health", headers={"Host": "evil.example:8000"})
        assert rebound.status_code == 400 and "evil.example" in rebound.json()["error"]
        assert client.get("/api/health", headers={"Host": "localhost:1234"}).status_code == 200
        # a body declared far over the limit is refused before it is read (a raw socket: clients send what they declare)
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as raw:
            raw.sendall(b"POST /api/battles HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 999999999\r\nConnection: close\r\n\r\n{}")
            assert raw.recv(4096).split(b"\r\n")[0].endswith(b"413 Request Entity Too Large")
        assert db_rows(tmp_path / "arena.db") == (0, 0)
    arena.close()


def test_a_battle_that_cannot_be_stored_fails_and_the_models_go_on(tmp_path, model_dirs, world):
    """The first battle's answers cannot be written (a locked disk): it fails with its reason, in the stream,
    in GET and on a vote; the models' workers live on and the next battle is answered and voted."""
    store = FailingStore(tmp_path / "arena.db")
    arena = Arena(real_workers(model_dirs, world), store, ["Who is Lopririn?"])
    with serving(arena) as url, httpx.Client(base_url=url, timeout=30) as client:
        first = client.post("/api/battles", json={"random": True}).json()["battle_id"]
        kind, data = events(client, first)[-1]
        assert kind == "failed" and "could not be stored" in data["error"]
        shown = client.get(f"/api/battles/{first}").json()
        assert shown["done"] is False and "locked" in shown["error"]
        assert events(client, first) == [("failed", {"error": shown["error"]})]  # from the store, after the fact
        refused = client.post(f"/api/battles/{first}/vote", json={"vote": "a"})
        assert refused.status_code == 409 and "failed" in refused.json()["error"]
        second = client.post("/api/battles", json={"random": True}).json()["battle_id"]
        assert events(client, second)[-1][0] == "done"
        assert client.post(f"/api/battles/{second}/vote", json={"vote": "a"}).status_code == 200
    assert all(w._thread.is_alive() for w in arena.workers.values())
    arena.close()


@pytest.mark.parametrize("method, path, body, status, word", BAD_REQUESTS)
def test_bad_input_gets_one_json_line_and_writes_nothing(tmp_path, method, path, body, status, word):
    arena = held_arena(tmp_path)
    with serving(arena) as url, httpx.Client(base_url=url, timeout=10) as client:
        before = db_rows(tmp_path / "arena.db")
        content = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        r = client.request(method, path, content=content, headers={"Content-Type": "application/json"})
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json" and list(r.json()) == ["error"]
        message = r.json()["error"]
        assert word.lower() in message.lower() and "\n" not in message and "Traceback" not in message
        assert db_rows(tmp_path / "arena.db") == before
    arena.close()


def test_votes_are_refused_until_the_answers_are_done_and_then_once(tmp_path):
    arena = held_arena(tmp_path, hold=True)
    with serving(arena) as url, httpx.Client(base_url=url, timeout=10) as client:
        battle_id = client.post("/api/battles", json={"random": True}).json()["battle_id"]
        assert client.get(f"/api/battles/{battle_id}").json()["done"] is False
        early = client.post(f"/api/battles/{battle_id}/vote", json={"vote": "a"})
        assert early.status_code == 409 and "not finished" in early.json()["error"]
        for body in ({"vote": "A"}, {"vote": "maybe"}, {"vote": 1}, {"vote": "a", "extra": 1}, {}):
            assert client.post(f"/api/battles/{battle_id}/vote", json=body).status_code == 400, body
        assert db_rows(tmp_path / "arena.db") == (1, 0)
        for w in arena.workers.values():
            w.release()
        assert client.get(f"/api/battles/{battle_id}").json()["done"] is True
        assert client.post(f"/api/battles/{battle_id}/vote", json={"vote": "tie"}).status_code == 200
        second = client.post(f"/api/battles/{battle_id}/vote", json={"vote": "tie"})
        assert second.status_code == 409
    assert db_rows(tmp_path / "arena.db") == (1, 1)
    arena.close()


def test_a_battle_left_unfinished_by_a_restart_cannot_be_voted_or_streamed(tmp_path):
    arena = held_arena(tmp_path, hold=True)
    battle = arena.start("Hello?", None)
    arena.close()  # the server stops before the answers are done
    again = held_arena(tmp_path)
    with serving(again) as url, httpx.Client(base_url=url, timeout=10) as client:
        assert client.get(f"/api/battles/{battle.id}/stream").status_code == 410
        assert client.post(f"/api/battles/{battle.id}/vote", json={"vote": "a"}).status_code == 409
    again.close()


def test_a_prompt_too_long_for_the_models_is_refused_before_anything_is_written(tmp_path):
    arena = held_arena(tmp_path, max_prompt_chars=100_000)
    for w in arena.workers.values():
        w.limit = 50
    with serving(arena) as url, httpx.Client(base_url=url, timeout=10) as client:
        r = client.post("/api/battles", json={"prompt": "word " * 20})
        assert r.status_code == 400 and "too long" in r.json()["error"]
    assert db_rows(tmp_path / "arena.db") == (0, 0)
    arena.close()


def test_with_a_token_only_invited_labellers_start_battles_and_vote(tmp_path):
    arena = held_arena(tmp_path, token="s3cret")
    with serving(arena) as url, httpx.Client(base_url=url, timeout=10) as client:
        missing = client.post("/api/battles", json={"random": True})
        wrong = client.post("/api/battles", json={"random": True}, headers={"X-Arena-Token": "guess"})
        assert (missing.status_code, wrong.status_code) == (401, 403)
        assert db_rows(tmp_path / "arena.db") == (0, 0)
        ok = client.post("/api/battles", json={"random": True}, headers={"X-Arena-Token": "s3cret"})
        battle_id = ok.json()["battle_id"]
        assert client.post(f"/api/battles/{battle_id}/vote", json={"vote": "a"}).status_code == 401
        bearer = {"Authorization": "Bearer s3cret"}
        assert client.post(f"/api/battles/{battle_id}/vote", json={"vote": "a"}, headers=bearer).status_code == 200
        assert client.get("/api/leaderboard").status_code == 200  # reading needs no token
    arena.close()


def test_the_page_is_served_with_a_policy_that_runs_only_its_own_scripts(tmp_path):
    arena = held_arena(tmp_path)
    with serving(arena) as url, httpx.Client(base_url=url, timeout=10) as client:
        page = client.get("/")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy and "default-src 'none'" in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "<script src=\"/static/arena.js\"" in page.text and "http" not in page.text.split("<body>")[1]
        assert client.get("/static/arena.js").status_code == 200 and client.get("/leaderboard").status_code == 200
        assert client.get("/static/../app.py").status_code == 404
    arena.close()


def test_simulated_voters_export_and_leaderboard(tmp_path, model_dirs, world):
    """The world's labellers vote through HTTP; every acknowledged vote is in the store and the export."""
    from alignkit.serve.arena.simulate import simulate

    store = Store(tmp_path / "arena.db")
    arena = Arena(real_workers(model_dirs, world), store, [t.prompt for t in world.tasks("train")], seed=1)
    with serving(arena) as url:
        stats = simulate(url, world, voters=4, votes=24, seed=0)
        board = httpx.get(f"{url}/api/leaderboard").json()
    assert stats["errors"] == 0 and stats["votes"] == 24 and sum(stats["by_vote"].values()) == 24
    assert stats["battle_seconds"]["p50"] > 0 and stats["vote_seconds"]["p95"] >= stats["vote_seconds"]["p50"]
    assert sorted(r["id"] for r in store.voted()) == sorted(stats["acknowledged"])
    assert board["n_votes"] == 24 and {m["name"] for m in board["models"]} <= {"m0", "m1", "m2"}
    result = export_votes(store, tmp_path / "data")
    assert result["n_pairs"] + result["n_labels"] + result["n_same_answers"] == 24
    arena.close()


def test_read_stream_raises_on_a_failed_battle():
    class Lines:
        def iter_lines(self):
            yield from ["event: token", 'data: {"side": "a", "text": "x"}', "", "event: failed",
                        'data: {"error": "m0 could not answer: boom"}', ""]

    with pytest.raises(RuntimeError, match="boom"):
        read_stream(Lines())
