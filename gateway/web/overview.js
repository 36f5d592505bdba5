"use strict";
// The overview reads GET /v1/audit/overview, /v1/budgets and, when the gateway has them,
// /v1/approvals. No build step; values go into the page as text, never as HTML.
const FILTERS = ["since", "sandbox", "policy"];
const COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
                "#e377c2", "#17becf"];
const OTHER_COLOR = "#7f7f7f";
const $ = (id) => document.getElementById(id);
const state = {data: null, charts: {}, generation: 0};
window.sandgateOverview = state;   // read by the browser test (the chart's own data)

function params() {
  const out = new URLSearchParams();
  for (const name of FILTERS) {
    const value = $(name).value.trim();
    if (value) out.set(name, value);
  }
  return out;
}

async function get(path) {
  const response = await fetch(path, {
    headers: {"Authorization": "Bearer " + sessionStorage.getItem("sandgate-token")},
  });
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const error = new Error(`${response.status}: ${body.detail || response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return response.json();
}

function cell(tr, value, className) {
  const td = document.createElement("td");
  td.textContent = value === null || value === undefined ? "" : String(value);
  if (className) td.className = className;
  tr.appendChild(td);
  return td;
}

function fill(tableId, rows, columns, drill) {
  const body = $(tableId).tBodies[0];
  body.replaceChildren();
  if (!rows.length) {
    const tr = body.insertRow();
    cell(tr, "none", "none").colSpan = columns.length;
    return;
  }
  for (const row of rows) {
    const tr = body.insertRow();
    columns.forEach((column, i) => {
      const td = cell(tr, row[column], i ? "n" : column);
      if (i === 0 && drill && row[column] !== null) {
        td.classList.add("drill");
        td.addEventListener("click", () => drill(row[column]));
      }
    });
  }
}

function drillTo(name) {
  return (value) => {
    $(name).value = value;
    apply();
  };
}

function auditLink(host) {
  const query = new URLSearchParams({host, decision: "deny"});
  if ($("sandbox").value.trim()) query.set("sandbox", $("sandbox").value.trim());
  location.href = "/audit?" + query.toString();
}

function chart(id, title, data, kind) {
  if (state.charts[kind]) state.charts[kind].destroy();
  const xs = data.buckets.map((t) => Date.parse(t) / 1000);
  const series = [{}];
  const values = [xs];
  data.series.forEach((s, i) => {
    series.push({label: s.host, stroke: s.host.startsWith("(") ? OTHER_COLOR
                 : COLORS[i % COLORS.length], width: 2, points: {show: true, size: 5}});
    values.push(s[kind]);
  });
  const width = Math.max(360, Math.floor((document.body.clientWidth - 80) / 2));
  state.charts[kind] = new uPlot({
    title, width, height: 260, series,
    scales: {x: {time: true}, y: {range: (_u, _min, max) => [0, Math.max(1, max)]}},
    axes: [{}, {label: "attempts"}],
  }, values, $(id));
}

function budgetText(used, limit) {
  return limit === null ? String(used) : `${used} / ${limit}`;
}

function budgets(rows) {
  const body = $("budgets").tBodies[0];
  body.replaceChildren();
  if (!rows.length) {
    cell(body.insertRow(), "none", "none").colSpan = 6;
    return;
  }
  for (const b of rows) {
    const tr = body.insertRow();
    tr.dataset.sandbox = b.sandbox_id;
    cell(tr, b.sandbox_id + (b.sandbox_gone ? " (gone)" : ""));
    cell(tr, b.policy);
    cell(tr, b.rule ? "rule " + b.rule : "sandbox");
    for (const [used, limit] of [[b.bytes_up, b.bytes_up_limit],
                                 [b.requests, b.requests_limit]]) {
      const td = cell(tr, budgetText(used, limit) + " ", "n");
      if (limit !== null) {
        const meter = document.createElement("meter");
        meter.max = limit;
        meter.value = Math.min(used, limit);
        meter.high = limit * 0.8;
        td.appendChild(meter);
      }
    }
    cell(tr, new Date(b.resets_at * 1000).toISOString().slice(11, 19));
  }
}

async function approvals() {
  const box = $("approvals");
  box.replaceChildren();
  const note = document.createElement("p");
  note.className = "none";
  let rows;
  try {
    // a gateway without an approval book (the central API) answers 404
    rows = await get("/v1/approvals?status=pending");
  } catch (error) {
    // its absence (or a refusal) is this section's business, not the page's
    note.textContent = error.status === 404 ? "none (this gateway has no approvals)"
      : error.status === 403 ? "not shown: approvals need a token of role admin or security"
      : "approvals could not be read: " + error.message;
    box.appendChild(note);
    return;
  }
  if (!rows.length) {
    note.textContent = "none pending";
    box.appendChild(note);
    return;
  }
  const table = document.createElement("table");
  table.id = "approvals-table";
  const head = table.createTHead().insertRow();
  for (const column of ["id", "sandbox", "request", "since"]) cell(head, column);
  for (const row of rows) {
    const tr = table.insertRow();
    cell(tr, row.id);
    cell(tr, row.sandbox_id);
    cell(tr, [row.method, row.host, row.path].filter((v) => v).join(" "));
    cell(tr, row.created_at);
  }
  box.appendChild(table);
}

async function load() {
  const mine = ++state.generation;
  const query = params();
  query.set("buckets", "30");
  $("status").textContent = "loading";
  try {
    const [data, spent] = await Promise.all([
      get("/v1/audit/overview?" + query.toString()),
      get("/v1/budgets" + ($("sandbox").value.trim()
        ? "?sandbox=" + encodeURIComponent($("sandbox").value.trim()) : "")),
    ]);
    if (mine !== state.generation) return;
    state.data = data;
    chart("chart-denied", "denied", data, "denied");
    chart("chart-allowed", "allowed", data, "allowed");
    fill("top-denied-hosts", data.top_denied_hosts, ["host", "count"], auditLink);
    fill("top-denied-reasons", data.top_denied_reasons, ["reason", "count"]);
    fill("per-sandbox", data.per_sandbox, ["sandbox_id", "allowed", "denied"],
         drillTo("sandbox"));
    fill("per-policy", data.per_policy, ["policy", "allowed", "denied"], drillTo("policy"));
    const spentRows = $("policy").value.trim()
      ? spent.budgets.filter((b) => b.policy === $("policy").value.trim()) : spent.budgets;
    budgets(spentRows);
    await approvals();
    const scope = [["sandbox", $("sandbox").value], ["policy", $("policy").value]]
      .filter(([, v]) => v.trim()).map(([k, v]) => `${k} ${v.trim()}`).join(", ");
    $("scope").textContent = `${data.since} to ${data.until}` + (scope ? `; ${scope}` : "");
    $("status").textContent = "updated " + new Date().toISOString().slice(11, 19);
    document.body.dataset.ready = String(mine);
  } catch (error) {
    $("status").textContent = "error " + error.message;
  }
}

function apply() {
  const token = $("token").value.trim();
  if (token) sessionStorage.setItem("sandgate-token", token);
  const url = new URL(location.href);
  url.search = params().toString();
  history.replaceState(null, "", url);
  if (sessionStorage.getItem("sandgate-token")) load();
}

$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  apply();
});

// Filters can come from the address (shareable links); the token never does.
for (const [name, value] of new URLSearchParams(location.search)) {
  if (FILTERS.includes(name)) $(name).value = value;
}
if (sessionStorage.getItem("sandgate-token")) load();
