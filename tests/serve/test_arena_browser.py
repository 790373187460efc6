"""The arena's page in a real browser (Debian's Chromium under Playwright, the `browser` fixture of
tests/conftest.py, via `open_offline`): a person types prompts, watches two answers stream in and clicks each of the four buttons;
hostile model output and prompts stay text. ALIGNKIT_SKIP_BROWSER=1 skips this file."""

import os

import pytest
from arena_support import HeldWorker, real_workers, serving

from alignkit.serve.arena.app import Arena
from alignkit.serve.arena.export import vote_records
from alignkit.serve.arena.store import Store

pytestmark = pytest.mark.skipif(os.environ.get("ALIGNKIT_SKIP_BROWSER") == "1",
                                reason="ALIGNKIT_SKIP_BROWSER=1: the arena's page is not opened in Chromium")

# Counts the changes of each pane's text while a battle streams: more than one means it arrived in pieces.
COUNT_UPDATES_JS = """() => { window.__updates = {a: 0, b: 0};
  for (const side of ["a", "b"]) new MutationObserver(() => { window.__updates[side] += 1; })
    .observe(document.getElementById("answer-" + side), {childList: true, characterData: true, subtree: true}); }"""


def test_four_battles_with_each_of_the_four_buttons(open_offline, tmp_path, model_dirs, world):
    store = Store(tmp_path / "arena.db")
    arena = Arena(real_workers(model_dirs, world, max_new_tokens=12), store, [t.prompt for t in world.tasks("train")])
    choices = ["a", "b", "tie", "both_bad"]
    with serving(arena) as url:
        page, outside, errors = open_offline(url + "/", allow=url + "/", viewport={"width": 1280, "height": 900})
        shown = []
        for i, choice in enumerate(choices):
            prompt = f"Who is Lopririn? ({i})"
            page.fill("#prompt", prompt)
            page.evaluate(COUNT_UPDATES_JS)
            page.click("#send")
            page.wait_for_selector("#vote-a:enabled", timeout=30_000)  # both answers are done
            answers = {s: page.text_content(f"#answer-{s}") for s in "ab"}
            updates = page.evaluate("window.__updates")
            assert updates["a"] > 1 and updates["b"] > 1, f"the answers did not stream in pieces: {updates}"
            assert page.text_content("#shown-prompt") == prompt
            assert page.is_hidden("#model-a") and page.is_hidden("#new-round")  # names hidden until the vote
            page.click(f"#vote-{choice}")
            page.wait_for_selector("#model-a:visible")
            names = {s: page.text_content(f"#model-{s}") for s in "ab"}
            assert names["a"] != names["b"] and set(names.values()) <= {"m0", "m1", "m2"}
            assert all(page.is_disabled(f"#vote-{c}") for c in choices)  # one vote per battle
            shown.append((prompt, answers, names))
            if i == 0:
                page.screenshot(path=tmp_path / "arena.png", full_page=True)
            page.click("#new-round")
            assert page.input_value("#prompt") == "" and page.text_content("#answer-a") == ""
        assert not outside and not errors, (outside, errors)
    rows = store.voted()
    assert [r["vote"] for r in rows] == choices and len(rows) == 4
    for row, (prompt, answers, names) in zip(rows, shown):
        assert row["prompt"] == prompt and {"a": row["model_a"], "b": row["model_b"]} == names
        assert {"a": row["answer_a"], "b": row["answer_b"]} == answers
    pairs, labels, same = vote_records(store)
    assert same == 0 and len(pairs) == 2 and len(labels) == 2
    (p0, a0, n0), (p1, a1, n1) = shown[0], shown[1]
    assert (pairs[0]["prompt"], pairs[0]["chosen"], pairs[0]["rejected"], pairs[0]["model_chosen"]) == (p0, a0["a"], a0["b"], n0["a"])
    assert (pairs[1]["prompt"], pairs[1]["chosen"], pairs[1]["rejected"], pairs[1]["model_chosen"]) == (p1, a1["b"], a1["a"], n1["b"])
    assert [r["label"] for r in labels] == ["tie", "both_bad"]
    assert labels[1]["responses"] == [shown[3][1]["a"], shown[3][1]["b"]] and labels[1]["models"] == [shown[3][2]["a"], shown[3][2]["b"]]
    assert (tmp_path / "arena.png").stat().st_size > 10_000
    arena.close()


HOSTILE = ["<script>window.__pwned = 1</script>", "<img src=x onerror=\"window.__pwned = 2\">", " & <b>bold</b>"]


def test_model_output_prompts_and_names_show_as_text_and_never_run(open_offline, tmp_path):
    evil_name = "<img src=x onerror=\"window.__pwned = 4\">"
    workers = [HeldWorker(evil_name, HOSTILE), HeldWorker("plain", ["<i>also</i> text"])]
    arena = Arena(workers, Store(tmp_path / "arena.db"), [])
    prompt = "<img src=x onerror=\"window.__pwned = 3\"> hi"
    with serving(arena) as url:
        page, outside, errors = open_offline(url + "/", allow=url + "/", viewport={"width": 1280, "height": 900})
        page.fill("#prompt", prompt)
        page.click("#send")
        page.wait_for_selector("#vote-a:enabled")
        texts = {page.text_content("#answer-a"), page.text_content("#answer-b")}
        assert texts == {"".join(HOSTILE).strip(), "<i>also</i> text"}
        assert page.text_content("#shown-prompt") == prompt
        page.click("#vote-tie")
        page.wait_for_selector("#model-a:visible")
        assert {page.text_content("#model-a"), page.text_content("#model-b")} == {evil_name, "plain"}
        no_markup = "document.querySelectorAll('main img, main script, main b, main i').length"
        assert page.evaluate("window.__pwned") is None, "model output, a prompt or a name ran as code"
        assert page.evaluate(no_markup) == 0
        page.goto(url + "/leaderboard", wait_until="load")
        page.wait_for_selector("#ratings tbody tr:nth-child(2)")
        assert evil_name in page.text_content("#ratings") and evil_name in page.text_content("#win-rate")
        assert page.evaluate("window.__pwned") is None and page.evaluate(no_markup) == 0
        assert not outside and not errors, (outside, errors)
    arena.close()


def test_an_invited_labeller_votes_and_the_token_leaves_the_address_bar(open_offline, tmp_path):
    workers = [HeldWorker("w0", ["One."]), HeldWorker("w1", ["Two."])]
    store = Store(tmp_path / "arena.db")
    arena = Arena(workers, store, ["Hello?"], token="s3cret", max_prompt_chars=50)
    with serving(arena) as url:
        page, outside, errors = open_offline(url + "/?token=s3cret", allow=url + "/")
        assert page.evaluate("location.search") == ""  # out of the history and of links copied from it
        page.wait_for_function("() => document.getElementById('prompt').maxLength === 50")
        page.click("#random")
        page.wait_for_selector("#vote-a:enabled")
        page.click("#vote-b")
        page.wait_for_selector("#model-a:visible")
        page.reload()  # the tab keeps the token
        page.click("#random")
        page.wait_for_selector("#vote-a:enabled")
        page.click("#vote-tie")
        page.wait_for_selector("#model-a:visible")
        assert not outside and not errors, (outside, errors)
    assert [r["vote"] for r in store.voted()] == ["b", "tie"]
    arena.close()
