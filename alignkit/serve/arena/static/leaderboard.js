// The leaderboard page: GET /api/leaderboard drawn as two tables, every value set with textContent.
"use strict";

const $ = (id) => document.getElementById(id);

function cell(row, text, className) {
  const td = document.createElement(row.parentElement && row.parentElement.tagName === "THEAD" ? "th" : "td");
  td.textContent = text;
  if (className) td.className = className;
  row.appendChild(td);
}

function draw(board) {
  $("n-votes").textContent = board.n_votes;
  $("tie-model").textContent = board.tie_model;
  const body = $("ratings").querySelector("tbody");
  body.replaceChildren();
  board.models.forEach((m, i) => {
    const row = body.insertRow();
    cell(row, String(i + 1));
    cell(row, m.name, "name");
    cell(row, m.rating.toFixed(0));
    cell(row, m.ci[0].toFixed(0) + " – " + m.ci[1].toFixed(0));
    [m.votes, m.wins, m.losses, m.ties, m.both_bad].forEach((n) => cell(row, String(n)));
  });
  const names = board.models.map((m) => m.name);
  const head = $("win-rate").querySelector("thead");
  head.replaceChildren();
  const top = head.insertRow();
  cell(top, "");
  names.forEach((n) => cell(top, n));
  const rates = $("win-rate").querySelector("tbody");
  rates.replaceChildren();
  names.forEach((a) => {
    const row = rates.insertRow();
    cell(row, a, "name");
    names.forEach((b) => {
      const rate = board.win_rate[a] ? board.win_rate[a][b] : null;
      cell(row, rate === null || rate === undefined ? "–" : rate.toFixed(2));
    });
  });
}

fetch("/api/leaderboard")
  .then((r) => r.json().then((data) => { if (!r.ok) throw new Error(data.error); return data; }))
  .then(draw)
  .catch((e) => { $("status").textContent = e.message; });
