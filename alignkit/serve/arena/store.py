"""Battles and votes in one SQLite file: what the arena's people said survives a crash.

Two tables. ``battles`` holds one row per battle — the prompt, both sides' model names, directories and
weight fingerprints, both answers once generated, the sampling settings, times and the voter's anonymous id —
and ``votes`` one row per vote, ``UNIQUE(battle_id)``: the database itself refuses a second vote on a
battle, whatever the page or a script does.

Durability: WAL journal with ``synchronous=FULL``, so a transaction is on disk when its COMMIT returns, and
the API acknowledges a vote only after that. A server killed at any point leaves every acknowledged vote in
the file, ``PRAGMA integrity_check`` ok, and at most battles whose answers were never finished (they cannot
be voted on). One connection serves the whole process behind a lock: SQLite serialises writers anyway, and
a vote's transaction is a few hundred microseconds plus the fsync.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from alignkit.errors import AlignkitError

VOTES = ("a", "b", "tie", "both_bad")
SCHEMA_VERSION = 1

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS battles (
    id TEXT PRIMARY KEY,
    created REAL NOT NULL,              -- unix time the battle was asked for
    finished REAL,                      -- when both answers were complete (NULL: never finished)
    prompt TEXT NOT NULL,
    model_a TEXT NOT NULL, model_b TEXT NOT NULL,
    dir_a TEXT NOT NULL, dir_b TEXT NOT NULL,
    fingerprint_a TEXT NOT NULL, fingerprint_b TEXT NOT NULL,   -- sha256 of each model's weight files
    answer_a TEXT, answer_b TEXT,
    sampling TEXT NOT NULL,             -- JSON: each side's mode (chat / few_shot), temperature, max_new_tokens
    voter TEXT,                         -- anonymous id from the page's cookie
    error TEXT                          -- why the answers failed (then never finished, never voted)
);
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY,
    battle_id TEXT NOT NULL UNIQUE REFERENCES battles(id),
    vote TEXT NOT NULL CHECK (vote IN ({", ".join(f"'{v}'" for v in VOTES)})),
    voter TEXT,
    created REAL NOT NULL
);
"""


class BattleError(Exception):
    """A request the store refuses; ``status`` is the HTTP status the API answers with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Side:
    """One side of a battle: the model's display name, its directory and the fingerprint of its weights."""
    name: str
    path: str
    fingerprint: str


class Store:
    """The arena's SQLite file. Thread-safe; every write is one committed transaction."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if self.path.is_dir():
            raise AlignkitError(f"votes={self.path} is a directory; give a file such as arena.db")
        if not self.path.parent.is_dir():
            raise AlignkitError(f"votes={self.path}: the folder {self.path.parent} does not exist")
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.executescript(_SCHEMA)
            found = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if found is None:
                self._db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(found[0]) != SCHEMA_VERSION:
                raise AlignkitError(f"{self.path} has arena schema {found[0]}; this alignkit reads {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as e:
            raise AlignkitError(f"{self.path} is not an arena database: {e}") from e
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- writes -------------------------------------------------------------------------------------------
    def add_battle(self, battle_id: str, prompt: str, a: Side, b: Side, sampling: dict, voter: str | None) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO battles (id, created, prompt, model_a, model_b, dir_a, dir_b, fingerprint_a, "
                "fingerprint_b, sampling, voter) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (battle_id, time.time(), prompt, a.name, b.name, a.path, b.path, a.fingerprint, b.fingerprint,
                 json.dumps(sampling, sort_keys=True), voter))

    def finish_battle(self, battle_id: str, answer_a: str, answer_b: str) -> None:
        with self._lock:
            self._db.execute("UPDATE battles SET answer_a = ?, answer_b = ?, finished = ? WHERE id = ?",
                             (answer_a, answer_b, time.time(), battle_id))

    def fail_battle(self, battle_id: str, error: str) -> None:
        with self._lock:
            self._db.execute("UPDATE battles SET error = ? WHERE id = ?", (error, battle_id))

    def vote(self, battle_id: str, vote: str, voter: str | None) -> dict[str, str]:
        """Record the battle's one vote; returns the model names {"a", "b"} once it is committed.

        Raises BattleError: 400 for a vote outside VOTES, 404 for an unknown battle, 409 when its answers are
        not finished (or never will be) or it already has a vote. Nothing is written then."""
        if vote not in VOTES:
            raise BattleError(400, f"vote must be one of {', '.join(VOTES)}, got {vote!r}")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute("SELECT model_a, model_b, finished, error FROM battles WHERE id = ?",
                                       (battle_id,)).fetchone()
                if row is None:
                    raise BattleError(404, f"no battle {battle_id!r}")
                if row[3] is not None:
                    raise BattleError(409, f"this battle's answers failed ({row[3]}); start a new round")
                if row[2] is None:
                    raise BattleError(409, "the answers of this battle are not finished; vote once both are done")
                self._db.execute("INSERT INTO votes (battle_id, vote, voter, created) VALUES (?, ?, ?, ?)",
                                 (battle_id, vote, voter, time.time()))
                self._db.execute("COMMIT")  # inside the try: a failed commit is rolled back, not left open
            except sqlite3.IntegrityError:
                self._db.execute("ROLLBACK")
                raise BattleError(409, "this battle already has its vote; start a new round") from None
            except BaseException:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
        return {"a": row[0], "b": row[1]}

    # -- reads --------------------------------------------------------------------------------------------
    def battle(self, battle_id: str) -> dict | None:
        """The battle's row as a dict (with ``vote``: its vote or None), or None for an unknown id."""
        with self._lock:
            cur = self._db.execute(
                "SELECT b.*, v.vote FROM battles b LEFT JOIN votes v ON v.battle_id = b.id WHERE b.id = ?",
                (battle_id,))
            row = cur.fetchone()
            names = [d[0] for d in cur.description]
        return None if row is None else dict(zip(names, row))

    def voted(self) -> list[dict]:
        """Every voted battle, oldest vote first: the battle's columns plus ``vote`` and ``voted`` (time)."""
        with self._lock:
            cur = self._db.execute(
                "SELECT b.*, v.vote, v.created AS voted, v.voter AS vote_voter FROM votes v "
                "JOIN battles b ON b.id = v.battle_id ORDER BY v.id")
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row)) for row in cur.fetchall()]

    def outcomes(self) -> list[tuple[str, str, str]]:
        """(model_a, model_b, vote) of every vote, for the leaderboard."""
        with self._lock:
            return [tuple(r) for r in self._db.execute(
                "SELECT b.model_a, b.model_b, v.vote FROM votes v JOIN battles b ON b.id = v.battle_id ORDER BY v.id")]

    def counts(self) -> dict[str, int]:
        with self._lock:
            battles, finished = self._db.execute("SELECT COUNT(*), COUNT(finished) FROM battles").fetchone()
            (votes,) = self._db.execute("SELECT COUNT(*) FROM votes").fetchone()
        return {"battles": battles, "finished": finished, "votes": votes}


def open_existing(path: str | Path) -> Store:
    """A store that must already exist (leaderboard, export): a missing file is an error, not a new database."""
    if not Path(path).is_file():
        raise AlignkitError(f"votes={path} does not exist (the arena writes it: alignkit arena models=... votes={path})")
    return Store(path)
