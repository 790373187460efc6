"""`alignkit arena leaderboard / export` on a database of votes, the export read by `alignkit rm` and
`alignkit dpo` unchanged, and bad input to the arena's commands answered with one line."""

import json

import pytest

from alignkit.cli import main
from alignkit.data.sources import load_records
from alignkit.serve.arena.store import Side, Store

VOTE_CYCLE = ["a", "b", "tie", "both_bad", "a", "a"]


def fill(path, n: int = 24) -> list[dict]:
    """``n`` voted battles between three models; the last one's two answers are the same (an "a" vote)."""
    store = Store(path)
    sides = [Side(f"m{i}", f"/models/m{i}", str(i) * 64) for i in range(3)]
    made = []
    for i in range(n):
        a, b = sides[i % 3], sides[(i + 1) % 3]
        answers = (f"Answer {i} from {a.name}.", f"Answer {i} from {b.name}.") if i < n - 1 else ("Same.", "Same.")
        vote = VOTE_CYCLE[i % len(VOTE_CYCLE)] if i < n - 1 else "a"
        store.add_battle(f"battle{i:03d}", f"Question {i}?", a, b, {"a": {}, "b": {}}, f"voter{i % 4}")
        store.finish_battle(f"battle{i:03d}", *answers)
        store.vote(f"battle{i:03d}", vote, f"voter{i % 4}")
        made.append({"id": f"battle{i:03d}", "a": a.name, "b": b.name, "answers": answers, "vote": vote})
    store.close()
    return made


def test_leaderboard_prints_a_table_and_json(tmp_path, capsys):
    fill(tmp_path / "arena.db")
    assert main(["arena", "leaderboard", f"votes={tmp_path / 'arena.db'}", "bootstrap=20"]) == 0
    table = capsys.readouterr().out
    assert all(name in table for name in ("m0", "m1", "m2"))
    assert main(["arena", "leaderboard", f"votes={tmp_path / 'arena.db'}", "bootstrap=20", "json=true"]) == 0
    board = json.loads(capsys.readouterr().out)
    assert board["n_votes"] == 24 and sum(m["votes"] for m in board["models"]) == 48


def test_export_writes_the_record_schema_and_keeps_what_is_there(tmp_path, capsys):
    made = fill(tmp_path / "arena.db")
    out = tmp_path / "data"
    assert main(["arena", "export", f"votes={tmp_path / 'arena.db'}", f"out={out}"]) == 0
    printed = capsys.readouterr().out
    assert "1 decisive votes between two identical answers left out" in printed
    pairs = load_records(out / "pairs.jsonl", "pair")
    labels = load_records(out / "labels.jsonl", "label")
    decisive = [m for m in made if m["vote"] in ("a", "b") and m["answers"][0] != m["answers"][1]]
    assert [p["battle_id"] for p in pairs] == [m["id"] for m in decisive]
    for p, m in zip(pairs, decisive):
        win = 0 if m["vote"] == "a" else 1
        assert (p["chosen"], p["rejected"]) == (m["answers"][win], m["answers"][1 - win])
        assert (p["model_chosen"], p["model_rejected"]) == ((m["a"], m["b"]) if win == 0 else (m["b"], m["a"]))
    ties = [m for m in made if m["vote"] in ("tie", "both_bad")]
    assert [(r["label"], r["responses"], r["models"]) for r in labels] == \
        [(m["vote"], list(m["answers"]), [m["a"], m["b"]]) for m in ties]
    assert load_records(out, "preference")  # the folder as a whole reads as preference records
    before = (out / "pairs.jsonl").read_bytes()
    assert main(["arena", "export", f"votes={tmp_path / 'arena.db'}", f"out={out}"]) == 2
    err = capsys.readouterr().err
    assert "overwrite=true" in err and len(err.strip().splitlines()) == 1
    assert (out / "pairs.jsonl").read_bytes() == before
    assert main(["arena", "export", f"votes={tmp_path / 'arena.db'}", f"out={out}", "overwrite=true"]) == 0


def test_rm_and_dpo_train_on_the_export_as_it_is(tmp_path, model_dirs):
    fill(tmp_path / "arena.db")
    data = tmp_path / "data"
    assert main(["arena", "export", f"votes={tmp_path / 'arena.db'}", f"out={data}"]) == 0
    common = ["max_steps=2", "batch_size=4", "warmup_steps=0", "max_length=48", "progress=false"]
    assert main(["rm", f"model={model_dirs[0]}", f"data={data}/pairs.jsonl,{data}/labels.jsonl",
                 f"out={tmp_path / 'rm'}", "heldout_fraction=0.2", *common]) == 0
    rm_summary = json.loads((tmp_path / "rm" / "summary.json").read_text())
    assert (tmp_path / "rm" / "model" / "config.json").is_file() and rm_summary["train_seconds"] >= 0
    assert main(["dpo", f"model={model_dirs[0]}", f"data={data}/pairs.jsonl", f"out={tmp_path / 'dpo'}", *common]) == 0
    assert (tmp_path / "dpo" / "model" / "model.safetensors").is_file()


@pytest.mark.parametrize("argv, words", [
    (["arena", "models=only/one"], "at least two"),
    (["arena", "models=a=/no/such/dir,b=/no/such/other"], "does not exist"),
    (["arena", "models=x=/a,x=/b"], "given twice"),
    (["arena", "models=/a,/b", "few_shot=base"], "not among models"),
    (["arena", "models=/a,/b", "port=0"], "port"),
    (["arena", "models=/a,/b", "modles=x"], "did you mean"),
    (["arena", "leaderboard", "votes=/no/such.db"], "does not exist"),
    (["arena", "export", "votes=/no/such.db", "out=/tmp/x"], "does not exist"),
    (["arena", "export", "votes=arena.db"], "needs out="),
    (["arena", "simulate", "url=http://127.0.0.1:9", "votes=1"], "no arena answers"),
])
def test_bad_arena_input_is_one_line(tmp_path, capsys, monkeypatch, argv, words):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_file_that_is_not_an_arena_database_is_refused(tmp_path, capsys):
    (tmp_path / "notes.db").write_text("not sqlite at all\n" * 100)
    assert main(["arena", "leaderboard", f"votes={tmp_path / 'notes.db'}"]) == 2
    assert "not an arena database" in capsys.readouterr().err


def test_help_lists_the_actions_and_the_keys(capsys):
    with pytest.raises(SystemExit) as e:
        main(["arena", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert all(a in text for a in ("serve", "leaderboard", "export", "simulate"))
    with pytest.raises(SystemExit):
        main(["arena", "serve", "--help"])
    text = capsys.readouterr().out
    assert all(f"{k}=" in text for k in ("models", "votes", "prompts", "host", "port", "token", "max_prompt_chars"))
    assert "host='127.0.0.1'" in text
