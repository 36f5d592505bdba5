"use strict";
// The audit page (audit.html): a read-only view of GET /v1/audit. No build step.
const FILTERS = ["host", "decision", "sandbox", "reason", "rule"];
const COLUMNS = ["time", "sandbox_id", "decision", "reason", "protocol", "method", "host",
                 "port", "path", "status", "rule"];
const MAX_ROWS = 1000;
let cursor = null, generation = 0, timer = null;

const $ = (id) => document.getElementById(id);

function currentFilters() {
  const params = new URLSearchParams();
  for (const name of FILTERS) {
    const value = $(name).value.trim();
    if (value) params.set(name, value);
  }
  return params;
}

function render(rows, prepend) {
  const body = $("rows");
  for (const row of rows) {
    const tr = document.createElement("tr");
    tr.className = row.decision;
    tr.dataset.id = row.id;
    for (const column of COLUMNS) {
      const td = document.createElement("td");
      td.className = column;
      let value = row[column];
      if (column === "time") value = value.slice(0, 23).replace("T", " ");
      td.textContent = value === null ? "" : String(value);  // never innerHTML: rows are data
      tr.appendChild(td);
    }
    if (prepend) body.insertBefore(tr, body.firstChild); else body.appendChild(tr);
  }
  while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
}

async function fetchRows(params) {
  const response = await fetch("/v1/audit?" + params.toString(), {
    headers: {"Authorization": "Bearer " + sessionStorage.getItem("sandgate-token")},
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    throw new Error(`${response.status}: ${body.detail || response.statusText}`);
  }
  return response.json();
}

async function load() {
  const mine = ++generation;
  clearTimeout(timer);
  $("rows").replaceChildren();
  cursor = null;
  const params = currentFilters();
  params.set("latest", "true");
  params.set("limit", "200");
  try {
    const page = await fetchRows(params);
    if (mine !== generation) return;
    render(page.rows.slice().reverse(), false);
    cursor = page.next_cursor;
    $("status").textContent = `${page.rows.length} rows; live`;
    poll(mine);
  } catch (error) {
    $("status").textContent = "error " + error.message;
  }
}

function poll(mine) {
  timer = setTimeout(async () => {
    if (mine !== generation) return;
    const params = currentFilters();
    params.set("latest", "true");
    params.set("limit", "500");
    if (cursor !== null) params.set("cursor", cursor);
    try {
      const page = await fetchRows(params);
      if (mine !== generation) return;
      render(page.rows, true);
      if (page.next_cursor !== null) cursor = page.next_cursor;
      $("live").textContent = "live " + new Date().toISOString().slice(11, 19);
    } catch (error) {
      $("status").textContent = "error " + error.message;
    }
    poll(mine);
  }, 1000);
}

$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (token) sessionStorage.setItem("sandgate-token", token);
  const url = new URL(location.href);
  url.search = currentFilters().toString();
  history.replaceState(null, "", url);
  if (sessionStorage.getItem("sandgate-token")) load();
});

// Filters can come from the address (shareable links); the token never does.
for (const [name, value] of new URLSearchParams(location.search)) {
  if (FILTERS.includes(name)) $(name).value = value;
}
if (sessionStorage.getItem("sandgate-token")) load();
