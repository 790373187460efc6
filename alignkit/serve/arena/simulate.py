"""Simulated voters: the built-in world's labellers play the arena through its HTTP API, as a browser would.

    alignkit arena simulate url=http://127.0.0.1:8000 voters=50 votes=1000

Each voter is a thread with its own HTTP client (and so its own cookie, as a person's browser has): it opens
the page, asks for a battle on a random prompt, reads both answers from the event stream, judges them with a
:class:`~alignkit.world.oracle.Labeller` of its own (the oracle's gold score plus Bradley-Terry noise, ties
and both-bad, the keys of `alignkit prefs`) and votes — until the voters together have cast ``votes`` votes.
The whole path from the page to a reward model is thus exercised without people. The arena must draw its
random prompts from the same world (``prompts=world``) for the labellers to judge them.

It reports votes per second and the latency of a battle (asked → both answers done) and of a vote (posted →
acknowledged after its commit), p50 and p95, and every error it met.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field

from alignkit.errors import AlignkitError


@dataclass
class Tally:
    """What the voters saw, shared between their threads."""
    target: int
    started: int = 0
    votes: dict[str, int] = field(default_factory=dict)        # vote → count
    acknowledged: list[str] = field(default_factory=list)      # battle ids whose vote the server acknowledged
    battle_seconds: list[float] = field(default_factory=list)
    vote_seconds: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def claim(self) -> bool:
        """One more battle may start (the voters stop once ``target`` are under way)."""
        with self.lock:
            if self.started >= self.target:
                return False
            self.started += 1
            return True


def read_stream(response) -> dict:
    """The answers of a battle from its event stream (an httpx streaming response)."""
    event, answers = None, {"a": "", "b": ""}
    for line in response.iter_lines():
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data = json.loads(line[5:])
            if event == "token":
                answers[data["side"]] += data["text"]
            elif event == "done":
                return data["answers"]
            elif event == "failed":
                raise RuntimeError(data["error"])
    raise RuntimeError(f"the stream ended before the answers were done (partial: {answers})")


def voter(url: str, labeller, oracle, tally: Tally, *, token: str = "", timeout: float = 120.0) -> None:
    """One simulated person: battle, read, judge, vote, until the tally is full."""
    import httpx

    headers = {"X-Arena-Token": token} if token else {}
    with httpx.Client(base_url=url, headers=headers, timeout=timeout) as client:
        try:
            client.get("/").raise_for_status()  # the page sets the voter's cookie
        except httpx.HTTPError as e:
            with tally.lock:
                tally.errors.append(f"GET /: {e}")
            return
        while tally.claim():
            try:
                t0 = time.perf_counter()
                battle = _json(client.post("/api/battles", json={"random": True}))
                with client.stream("GET", f"/api/battles/{battle['battle_id']}/stream") as response:
                    response.raise_for_status()
                    answers = read_stream(response)
                t1 = time.perf_counter()
                choice = labeller.compare(oracle.task(battle["prompt"]), answers["a"], answers["b"])
                _json(client.post(f"/api/battles/{battle['battle_id']}/vote", json={"vote": choice}))
                t2 = time.perf_counter()
            except Exception as e:  # noqa: BLE001 — every failure is counted and reported, none stops the others
                with tally.lock:
                    tally.errors.append(f"{type(e).__name__}: {' '.join(str(e).split())[:200]}")
                continue
            with tally.lock:
                tally.votes[choice] = tally.votes.get(choice, 0) + 1
                tally.acknowledged.append(battle["battle_id"])
                tally.battle_seconds.append(t1 - t0)
                tally.vote_seconds.append(t2 - t1)


def _json(response) -> dict:
    if response.status_code >= 400:
        try:
            message = response.json().get("error", response.text)
        except ValueError:
            message = response.text
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code} {message}")
    return response.json()


def simulate(url: str, world, *, voters: int, votes: int, seed: int = 0, token: str = "", timeout: float = 120.0,
             labeller: dict | None = None) -> dict:
    """Run ``voters`` simulated voters against the arena at ``url`` until ``votes`` votes are cast.

    ``labeller``: keyword arguments of ``world.labeller`` (temperature, tie_margin, both_bad_threshold); voter
    i's labeller is seeded ``seed + i``. Returns the statistics (see the module docstring)."""
    import httpx

    try:
        health = httpx.get(f"{url}/api/health", timeout=10).json()
    except (httpx.HTTPError, ValueError) as e:
        raise AlignkitError(f"url={url}: no arena answers there ({' '.join(str(e).split())[:120]})") from None
    tally = Tally(target=votes)
    threads = [threading.Thread(target=voter, name=f"voter-{i}", daemon=True,
                                args=(url, world.labeller(seed=seed + i, **(labeller or {})), world.oracle, tally),
                                kwargs={"token": token, "timeout": timeout}) for i in range(voters)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"url": url, "models": health.get("models", []), "voters": voters, "votes": len(tally.acknowledged),
            "by_vote": dict(sorted(tally.votes.items())), "errors": len(tally.errors), "first_errors": tally.errors[:5],
            "wall_seconds": wall, "votes_per_second": len(tally.acknowledged) / wall if wall > 0 else 0.0,
            "battle_seconds": percentiles(tally.battle_seconds), "vote_seconds": percentiles(tally.vote_seconds),
            "acknowledged": tally.acknowledged}


def percentiles(values: list[float]) -> dict:
    """p50 / p95 / max of latencies in seconds (nearest rank); empty → zeros."""
    if not values:
        return {"p50": 0.0, "p95": 0.0, "max": 0.0}
    s = sorted(values)

    def rank(q: float) -> float:
        return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]

    return {"p50": rank(0.50), "p95": rank(0.95), "max": s[-1]}
