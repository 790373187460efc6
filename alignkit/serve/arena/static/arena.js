// The battle page. Everything a model wrote is put on the page with textContent: shown as text, never run.
"use strict";

// An invited labeller opens /?token=...: the token moves to this tab's sessionStorage and out of the address
// bar (and so out of the history and of links shared from it).
const token = (() => {
  const params = new URLSearchParams(location.search);
  const given = params.get("token");
  if (given) {
    sessionStorage.setItem("arena-token", given);
    params.delete("token");
    history.replaceState(null, "", location.pathname + (params.toString() ? "?" + params : ""));
  }
  return sessionStorage.getItem("arena-token");
})();
const $ = (id) => document.getElementById(id);
const voteButtons = ["a", "b", "tie", "both_bad"].map((v) => $("vote-" + v));
let battle = null;   // {id, source: EventSource}

function headers() {
  const h = { "Content-Type": "application/json" };
  if (token) h["X-Arena-Token"] = token;
  return h;
}

async function post(path, body) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  let data = null;
  try { data = await response.json(); } catch (e) { data = { error: "the server did not answer with JSON" }; }
  if (!response.ok) throw new Error(data.error || ("HTTP " + response.status));
  return data;
}

function say(text, ok) {
  $("status").textContent = text;
  $("status").className = ok ? "status ok" : "status";
}

function setAsking(enabled) {
  $("send").disabled = !enabled;
  $("random").disabled = !enabled;
}

function reset() {
  if (battle && battle.source) battle.source.close();
  battle = null;
  for (const side of ["a", "b"]) {
    $("answer-" + side).textContent = "";
    $("answer-" + side).classList.remove("streaming");
    $("model-" + side).hidden = true;
    $("model-" + side).textContent = "";
  }
  voteButtons.forEach((b) => { b.disabled = true; });
  $("new-round").hidden = true;
  $("shown-prompt").hidden = true;
  say("");
}

async function start(body) {
  reset();
  setAsking(false);
  let created;
  try {
    created = await post("/api/battles", body);
  } catch (e) {
    say(e.message);
    setAsking(true);
    return;
  }
  $("prompt").value = created.prompt;
  $("shown-prompt").textContent = created.prompt;
  $("shown-prompt").hidden = false;
  const source = new EventSource("/api/battles/" + encodeURIComponent(created.battle_id) + "/stream");
  battle = { id: created.battle_id, source: source };
  ["a", "b"].forEach((side) => $("answer-" + side).classList.add("streaming"));
  source.addEventListener("token", (event) => {
    const piece = JSON.parse(event.data);
    $("answer-" + piece.side).textContent += piece.text;
  });
  source.addEventListener("done", (event) => {
    const answers = JSON.parse(event.data).answers;
    source.close();
    for (const side of ["a", "b"]) {
      $("answer-" + side).textContent = answers[side];
      $("answer-" + side).classList.remove("streaming");
    }
    voteButtons.forEach((b) => { b.disabled = false; });
    say("Both answers are in: which is better?", true);
  });
  source.addEventListener("failed", (event) => {
    source.close();
    say(JSON.parse(event.data).error);
    setAsking(true);
  });
  source.onerror = () => {
    if (source.readyState === EventSource.CLOSED) return;
    source.close();
    say("the connection to the server was lost; start a new round");
    setAsking(true);
  };
}

async function vote(choice) {
  if (!battle) return;
  voteButtons.forEach((b) => { b.disabled = true; });
  try {
    const result = await post("/api/battles/" + encodeURIComponent(battle.id) + "/vote", { vote: choice });
    for (const side of ["a", "b"]) {
      $("model-" + side).textContent = result.models[side];
      $("model-" + side).hidden = false;
    }
    say("Thank you: your vote is saved.", true);
    $("new-round").hidden = false;
  } catch (e) {
    say(e.message);
  }
}

$("send").addEventListener("click", () => {
  const prompt = $("prompt").value.trim();
  if (!prompt) { say("type a prompt first, or press Random prompt"); return; }
  start({ prompt: prompt });
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("send").click();
});
$("random").addEventListener("click", () => start({ random: true }));
voteButtons.forEach((b) => b.addEventListener("click", () => vote(b.dataset.vote)));
$("new-round").addEventListener("click", () => {
  reset();
  $("prompt").value = "";
  setAsking(true);
  $("prompt").focus();
});
fetch("/api/health").then((r) => r.json()).then((h) => {
  if (h.max_prompt_chars) $("prompt").maxLength = h.max_prompt_chars;
}).catch(() => {});
