"""Record schema validation (alignkit.data.formats) and loading (alignkit.data.sources)."""

from __future__ import annotations

import json

import pytest

from alignkit.data.formats import as_messages, preference_kind, ranking_groups, to_messages, validate
from alignkit.data.sources import iter_jsonl, load_records, write_jsonl
from alignkit.errors import AlignkitError, DataError

WHERE = "data.jsonl:12"
MSGS = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]


def error(kind: str, record, where: str = WHERE) -> str:
    """The message of the DataError that validating `record` raises; checks it is one line at `where`."""
    with pytest.raises(DataError) as info:
        validate(kind, record, where)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{where}: ")
    return message


# ---------------------------------------------------------------- valid records of every kind

VALID = [
    ("text", {"text": "once upon a time"}),
    ("chat", {"messages": MSGS}),
    ("chat", {"messages": [{"role": "system", "content": "be brief"}, *MSGS], "category": "greeting"}),
    ("chat", {"prompt": "hi", "completion": "hello"}),
    ("chat", {"prompt": MSGS[:1], "completion": MSGS[1:]}),
    ("pair", {"prompt": "q", "chosen": "good", "rejected": "bad"}),
    ("pair", {"prompt": MSGS[:1], "chosen": MSGS[1:], "rejected": [{"role": "assistant", "content": "bye"}],
              "margin": 1.5}),
    ("pair", {"prompt": "q", "chosen": "good", "rejected": "", "margin": 2}),
    ("ranking", {"prompt": "q", "responses": ["a", "b"], "ranking": [1, 0]}),
    ("ranking", {"prompt": "q", "responses": ["a", "b", "c", "d"], "ranking": [2, [0, 1], 3]}),
    ("ranking", {"prompt": "q", "responses": ["a", "b", "c"], "ranking": [[2], [0, 1]]}),  # parquet-style
    ("label", {"prompt": "q", "responses": ["a", "b"], "label": "tie"}),
    ("label", {"prompt": "q", "responses": ["a", "b"], "label": "both_bad"}),
    ("preference", {"prompt": "q", "chosen": "good", "rejected": "bad"}),
    ("preference", {"prompt": "q", "responses": ["a", "b"], "ranking": [0, 1]}),
    ("preference", {"prompt": "q", "responses": ["a", "b"], "label": "tie"}),
    ("preference", {"prompt": "q", "chosen": "good", "rejected": "bad", "ranking": None}),  # null = absent
    ("prompt", {"prompt": "2 + 3 = ?", "answer": "5", "category": "arithmetic"}),
    ("prompt", {"prompt": MSGS[:1]}),
]


@pytest.mark.parametrize(("kind", "record"), VALID)
def test_valid_records_pass_unchanged(kind, record):
    before = json.dumps(record, sort_keys=True)
    assert validate(kind, record, WHERE) is record
    assert json.dumps(record, sort_keys=True) == before  # extra fields kept, nothing rewritten


# ---------------------------------------------------------------- invalid records: (kind, record, words)

INVALID = [
    # not an object
    ("text", ["a list"], ["expected a JSON object, got a list"]),
    ("pair", "just text", ["expected a JSON object, got a string"]),
    # text
    ("text", {}, ["'text'", "is missing"]),
    ("text", {"text": ""}, ["'text'", "is empty"]),
    ("text", {"text": "  \n"}, ["'text'", "is empty"]),
    ("text", {"text": 3}, ["'text'", "a number", "expected a string"]),
    # chat
    ("chat", {"text": "x"}, ["'messages'", "is missing", "prompt and completion"]),
    ("chat", {"messages": []}, ["'messages'", "empty list"]),
    ("chat", {"messages": "hi"}, ["'messages'", "a string"]),
    ("chat", {"messages": [{"role": "bot", "content": "x"}]}, ["'messages[0].role'", "'bot'", "user"]),
    ("chat", {"messages": [{"content": "x"}]}, ["'messages[0].role'", "is missing"]),
    ("chat", {"messages": [MSGS[0], {"role": "assistant"}]}, ["'messages[1].content'", "is missing"]),
    (
        "chat",
        {"messages": [MSGS[0], {"role": "assistant", "content": 7}]},
        ["'messages[1].content'", "a number"],
    ),
    ("chat", {"messages": [MSGS[0], "hello"]}, ["'messages[1]'", "expected an object"]),
    ("chat", {"messages": MSGS[:1]}, ["'messages'", "no assistant message"]),
    ("chat", {"prompt": "hi"}, ["'completion'", "is missing"]),
    ("chat", {"prompt": "hi", "completion": None}, ["'completion'", "is null"]),
    ("chat", {"prompt": "hi", "completion": MSGS[:1]}, ["'completion'", "no assistant message"]),
    ("chat", {"prompt": "", "completion": "x"}, ["'prompt'", "is empty"]),
    ("chat", {"messages": MSGS[::-1]}, ["'messages[0].role'", "'assistant' before any user message"]),
    ("chat", {"messages": MSGS, "prompt": "hi"}, ["'messages'", "'prompt'"]),
    # pair
    ("pair", {"prompt": "q", "rejected": "bad"}, ["'chosen'", "is missing", "prompt, chosen, rejected"]),
    ("pair", {"chosen": "a", "rejected": "b"}, ["'prompt'", "is missing"]),
    ("pair", {"prompt": "q", "chosen": 1, "rejected": "b"}, ["'chosen'", "a number", "list of messages"]),
    ("pair", {"prompt": 5, "chosen": "a", "rejected": "b"}, ["'prompt'", "a number"]),
    ("pair", {"prompt": "q", "chosen": "a", "rejected": "a"}, ["'rejected'", "the same as 'chosen'"]),
    (
        "pair",
        {"prompt": "q", "chosen": "a", "rejected": "b", "margin": "big"},
        ["'margin'", "'big'", "number"],
    ),
    ("pair", {"prompt": "q", "chosen": "a", "rejected": "b", "margin": True}, ["'margin'", "True"]),
    ("pair", {"prompt": "q", "chosen": "a", "rejected": "b", "margin": float("nan")}, ["'margin'", "finite"]),
    (
        "pair",
        {"prompt": [{"role": "human", "content": "q"}], "chosen": "a", "rejected": "b"},
        ["'prompt[0].role'", "'human'"],
    ),
    # ranking
    (
        "ranking",
        {"prompt": "q", "responses": ["a", "b", "c"], "ranking": [0, 4, 1]},
        ["'ranking'", "index 4", "3 responses"],
    ),
    (
        "ranking",
        {"prompt": "q", "responses": ["a", "b", "c"], "ranking": [0, -1, 1]},
        ["'ranking'", "index -1"],
    ),
    (
        "ranking",
        {"prompt": "q", "responses": ["a", "b", "c"], "ranking": [0, [1, 0], 2]},
        ["'ranking'", "index 0 twice"],
    ),
    (
        "ranking",
        {"prompt": "q", "responses": ["a", "b", "c"], "ranking": [0, 1]},
        ["'ranking'", "does not list index 2"],
    ),
    (
        "ranking",
        {"prompt": "q", "responses": ["a", "b", "c"], "ranking": [0, [1, [2]]]},
        ["'ranking'", "inside a tie group"],
    ),
    (
        "ranking",
        {"prompt": "q", "responses": ["a", "b"], "ranking": [0, [], 1]},
        ["'ranking'", "empty tie group"],
    ),
    (
        "ranking",
        {"prompt": "q", "responses": ["a", "b"], "ranking": [0, "1"]},
        ["'ranking'", "'1'", "integer"],
    ),
    ("ranking", {"prompt": "q", "responses": ["a", "b"], "ranking": [0, 1.0]}, ["'ranking'", "integer"]),
    ("ranking", {"prompt": "q", "responses": ["a", "b"], "ranking": "0>1"}, ["'ranking'", "list"]),
    ("ranking", {"prompt": "q", "responses": ["a", "b"], "ranking": []}, ["'ranking'", "non-empty"]),
    ("ranking", {"prompt": "q", "responses": ["a"], "ranking": [0]}, ["'responses'", "at least 2"]),
    ("ranking", {"prompt": "q", "responses": ["a", 2], "ranking": [0, 1]}, ["'responses[1]'", "a number"]),
    (
        "ranking",
        {"prompt": "q", "ranking": [0, 1]},
        ["'responses'", "is missing", "prompt, responses, ranking"],
    ),
    # label
    (
        "label",
        {"prompt": "q", "responses": ["a", "b"], "label": "good"},
        ["'label'", "'good'", "'tie'", "'both_bad'"],
    ),
    ("label", {"prompt": "q", "responses": ["a", "b"], "label": 1}, ["'label'", "1"]),
    ("label", {"prompt": "q", "responses": ["a", "b"]}, ["'label'", "is missing"]),
    ("label", {"prompt": "q", "responses": "ab", "label": "tie"}, ["'responses'", "a string"]),
    # preference
    ("preference", {"prompt": "q", "responses": ["a", "b"]}, ["none of", "'chosen'", "'ranking'", "'label'"]),
    (
        "preference",
        {"prompt": "q", "chosen": "a", "rejected": "b", "label": "tie"},
        ["both", "'chosen'", "'label'"],
    ),
    ("preference", {"prompt": "q", "chosen": "a"}, ["'rejected'", "is missing"]),
    ("preference", {"prompt": "q", "responses": ["a", "b"], "ranking": [0, 2]}, ["'ranking'", "index 2"]),
    # prompt
    ("prompt", {"question": "q"}, ["'prompt'", "is missing"]),
    ("prompt", {"prompt": ""}, ["'prompt'", "is empty"]),
    ("prompt", {"prompt": {"text": "q"}}, ["'prompt'", "an object"]),
    ("prompt", {"prompt": []}, ["'prompt'", "empty list"]),
]


@pytest.mark.parametrize(("kind", "record", "words"), INVALID)
def test_invalid_records_name_the_field(kind, record, words):
    message = error(kind, record)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


def test_long_values_stay_on_one_line():
    message = error("label", {"prompt": "q", "responses": ["a", "b"], "label": "x\n" * 100})
    assert "'label'" in message and len(message) < 200


def test_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="unknown record kind"):
        validate("pairs", {"prompt": "q"}, WHERE)


def test_data_error_is_an_alignkit_error():
    assert issubclass(DataError, AlignkitError)


# ---------------------------------------------------------------- normalisation helpers


def test_to_messages_from_prompt_completion_strings():
    record = validate("chat", {"prompt": "2+2?", "completion": "4"}, WHERE)
    assert to_messages(record) == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]


def test_to_messages_from_message_lists_and_messages():
    system = {"role": "system", "content": "be brief"}
    record = {"prompt": [system, MSGS[0]], "completion": MSGS[1:]}
    assert to_messages(validate("chat", record, WHERE)) == [system, *MSGS]
    record = {"messages": MSGS}
    out = to_messages(record)
    assert out == MSGS and out is not MSGS  # a copy: callers may append without touching the record


def test_as_messages_and_ranking_groups_and_preference_kind():
    assert as_messages("hi", "assistant") == [{"role": "assistant", "content": "hi"}]
    assert ranking_groups([2, [0, 1], 3]) == [[2], [0, 1], [3]]
    assert preference_kind({"prompt": "q", "chosen": "a", "rejected": "b"}) == "pair"
    assert preference_kind({"prompt": "q", "responses": ["a", "b"], "ranking": [0, 1]}) == "ranking"
    assert preference_kind({"prompt": "q", "responses": ["a", "b"], "label": "tie"}) == "label"


# ---------------------------------------------------------------- files


def data_error(path, kind: str, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_records(path, kind, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


PAIRS = [
    {"prompt": "q1", "chosen": "a", "rejected": "b", "margin": 1.0},
    {"prompt": "q2", "chosen": "c", "rejected": "d"},
    {"prompt": "q3", "chosen": "e", "rejected": "f", "category": "x"},
]


def test_jsonl_round_trip_skips_blank_lines(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    path.write_text(path.read_text().replace("\n", "\n\n", 1) + "\n  \n")
    assert load_records(path, "pair") == PAIRS
    assert [n for n, _ in iter_jsonl(path)] == [1, 3, 4]
    assert load_records(str(path), "preference", limit=2) == PAIRS[:2]


def test_malformed_json_reports_its_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"}\n{"text": "c",}\n{"text": "d"}\n')
    message = data_error(path, "text")
    assert message.startswith(f"{path}:4: invalid JSON (")
    assert "bad.jsonl:4" in message


def test_invalid_record_reports_file_line_and_field(tmp_path):
    path = tmp_path / "prefs.jsonl"
    write_jsonl(path, [PAIRS[0], PAIRS[1], {"prompt": "q", "rejected": "b"}])
    message = data_error(path, "pair")
    assert message == f"{path}:3: field 'chosen' is missing (pair records need prompt, chosen, rejected)"


def test_non_object_line(tmp_path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a"}\n["text", "b"]\n')
    assert data_error(path, "text") == f"{path}:2: expected a JSON object, got a list"


def test_json_list_and_json_lines_named_json(tmp_path):
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps(PAIRS, indent=2))
    assert load_records(listed, "pair") == PAIRS
    lines = write_jsonl(tmp_path / "lines.json", PAIRS)
    assert load_records(lines, "pair") == PAIRS
    listed.write_text(json.dumps([PAIRS[0], {"prompt": "q"}]))
    assert data_error(listed, "pair").startswith(f"{listed}:item 2: field 'chosen' is missing")
    listed.write_text(json.dumps({"records": PAIRS}))
    assert "expected a JSON list of records, got an object" in data_error(listed, "pair")


def test_parquet_round_trip_and_row_numbers(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "prefs.parquet"
    schema = pa.schema([(k, pa.float64() if k == "margin" else pa.string()) for k in (*PAIRS[0], "category")])
    pq.write_table(pa.Table.from_pylist(PAIRS, schema=schema), path)
    # Columnar files give every row every column; missing ones come back as null and are dropped.
    assert load_records(path, "pair") == PAIRS
    ranked = [
        {"prompt": "q", "responses": ["a", "b", "c"], "ranking": [[2], [0, 1]]},
        {"prompt": "q2", "responses": ["a", "b"], "ranking": [[0], [2]]},
    ]
    pq.write_table(pa.Table.from_pylist(ranked), path)
    message = data_error(path, "preference")
    assert message == f"{path}:row 2: field 'ranking' lists index 2 but there are 2 responses (indices 0..1)"


def test_datasets_dir_round_trip(tmp_path):
    datasets = pytest.importorskip("datasets")
    chats = [
        {"messages": MSGS, "category": "greeting"},
        {"messages": MSGS[::-1][1:] + MSGS[1:], "category": "x"},
    ]
    datasets.Dataset.from_list(chats).save_to_disk(str(tmp_path / "ds"))
    assert load_records(tmp_path / "ds", "chat") == chats
    pairs = [{"prompt": "hi", "completion": "yo"}]
    datasets.Dataset.from_list(pairs).save_to_disk(str(tmp_path / "pc"))
    (record,) = load_records(tmp_path / "pc", "chat")
    assert to_messages(record) == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"text": "a"}, {"text": ""}])}).save_to_disk(
        str(tmp_path / "dd")
    )
    assert data_error(tmp_path / "dd", "text") == f"{tmp_path / 'dd' / 'train'}:row 2: field 'text' is empty"


def test_directory_of_files(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    write_jsonl(tmp_path / "d" / "a.jsonl", [{"prompt": "p1"}, {"prompt": "p2"}])
    pq.write_table(pa.Table.from_pylist([{"prompt": "p3", "answer": "5"}]), tmp_path / "d" / "b.parquet")
    (tmp_path / "d" / "README.md").write_text("ignored")
    assert load_records(tmp_path / "d", "prompt") == [
        {"prompt": "p1"},
        {"prompt": "p2"},
        {"prompt": "p3", "answer": "5"},
    ]
    assert load_records(tmp_path / "d", "prompt", limit=1) == [{"prompt": "p1"}]
    (tmp_path / "empty").mkdir()
    assert "no .jsonl or .parquet files" in data_error(tmp_path / "empty", "prompt")


def test_of_several_preference_files_one_may_be_empty_not_all(tmp_path):
    from alignkit.stages.rm import load_preferences

    pairs, empty = tmp_path / "pairs.jsonl", tmp_path / "labels.jsonl"
    pairs.write_text(json.dumps({"prompt": "p", "chosen": "a", "rejected": "b"}) + "\n")
    empty.write_text("")
    assert [r["chosen"] for r in load_preferences(f"{pairs},{empty}")] == ["a"]
    with pytest.raises(DataError, match="no records"):
        load_preferences(f"{empty},{empty}")
    with pytest.raises(DataError, match="labels.jsonl: no records"):
        load_preferences(str(empty))


def test_missing_empty_and_unsupported(tmp_path):
    assert data_error(tmp_path / "nope.jsonl", "text") == f"{tmp_path / 'nope.jsonl'}: does not exist"
    (tmp_path / "empty.jsonl").write_text("\n\n")
    assert data_error(tmp_path / "empty.jsonl", "text") == f"{tmp_path / 'empty.jsonl'}: no records"
    (tmp_path / "data.csv").write_text("text\nhello\n")
    message = data_error(tmp_path / "data.csv", "text")
    assert "unsupported file type '.csv'" in message and ".jsonl" in message and ".parquet" in message


def test_ten_thousand_records_load(tmp_path):  # how fast: benchmarks/world_and_data.py
    path = write_jsonl(
        tmp_path / "big.jsonl", [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(10_000)]
    )
    assert len(load_records(path, "preference")) == 10_000


def test_a_split_by_prompt_keeps_each_prompt_on_one_side():
    from alignkit.training.order import split_heldout
    items = list(range(40))
    assert split_heldout(items, 0.25, seed=3, keys=[f"p{i}" for i in items]) == split_heldout(items, 0.25, seed=3)
    keys = [i // 4 for i in items]  # ten prompts, four comparisons each
    train, val = split_heldout(items, 0.2, seed=3, keys=keys)
    assert sorted(train + val) == items and len(val) == 8
    assert not {k // 4 for k in train} & {k // 4 for k in val}
