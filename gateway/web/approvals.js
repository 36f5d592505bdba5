"use strict";
// Pending approvals, allowed or denied with a click (POST /v1/approvals/{id}/allow|deny).
// The approvals page (approvals.html). No build step. Rows are data: never innerHTML.
const $ = (id) => document.getElementById(id);
let timer = null;

const api = (path, options = {}) => fetch(path, {
  ...options,
  headers: {"Authorization": "Bearer " + sessionStorage.getItem("sandgate-token"),
            "Content-Type": "application/json"},
});

function cell(tr, text, className) {
  const td = document.createElement("td");
  if (className) td.className = className;
  td.textContent = text === null || text === undefined ? "" : String(text);
  tr.appendChild(td);
  return td;
}

const request = (a) =>
  `${a.method} ${a.scheme}://${a.host}:${a.port}${a.path}${a.query ? "?" + a.query : ""}`;
// the announced length; null: not announced, a body of any length may follow
const bodyLength = (a) => a.body_bytes === null ? "not announced" : `${a.body_bytes} bytes`;

function button(label, className, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.textContent = label;
  b.className = className;
  b.addEventListener("click", onClick);
  return b;
}

async function decide(id, verb, reach) {
  const options = {method: "POST"};
  if (verb === "allow") options.body = JSON.stringify({"for": reach});
  const response = await api(`/v1/approvals/${id}/${verb}`, options);
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    $("status").textContent = `error ${response.status}: ${body.detail || response.statusText}`;
  } else {
    $("status").textContent = `approval ${id}: ${verb === "allow" ? "allowed for " + reach : "denied"}`;
  }
  refresh();
}

function renderPending(rows) {
  const body = $("pending");
  body.replaceChildren();
  for (const a of rows) {
    const tr = document.createElement("tr");
    tr.dataset.id = a.id;
    cell(tr, a.id, "id");
    cell(tr, a.sandbox_id, "sandbox");
    cell(tr, request(a), "request mono");
    cell(tr, bodyLength(a), "body");
    cell(tr, a.rule || "(no rule: on_unmatched)", "rule");
    cell(tr, a.policy, "policy");
    cell(tr, a.expires_at.slice(0, 19).replace("T", " "), "expires");
    const actions = cell(tr, "", "actions");
    const reach = document.createElement("select");
    reach.className = "reach";
    // "sandbox": later requests with this method and path, whatever their query or body
    for (const [value, label] of [["once", "once"], ["sandbox", "sandbox (any query, body)"],
                                  ["policy", "policy"]]) reach.add(new Option(label, value));
    actions.append(reach,
                   button("allow", "allow", () => decide(a.id, "allow", reach.value)),
                   button("deny", "deny", () => decide(a.id, "deny")));
    body.appendChild(tr);
  }
}

function renderDecided(rows) {
  const body = $("decided");
  body.replaceChildren();
  for (const a of rows) {
    const tr = document.createElement("tr");
    tr.className = a.status;
    tr.dataset.id = a.id;
    cell(tr, a.id, "id");
    cell(tr, a.status, "status");
    cell(tr, a.sandbox_id, "sandbox");
    cell(tr, request(a), "request mono");
    cell(tr, a.scope, "scope");
    cell(tr, a.decided_by, "by");
    cell(tr, a.policy_rule ? `${a.policy}: rule ${a.policy_rule}, revision ${a.revision}` : "",
         "change");
    body.appendChild(tr);
  }
}

async function refresh() {
  clearTimeout(timer);
  try {
    const response = await api("/v1/approvals?limit=100");
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      throw new Error(`${response.status}: ${body.detail || response.statusText}`);
    }
    const rows = await response.json();
    const pending = rows.filter((a) => a.status === "pending");
    // a row being decided stays put: only re-render when the set of pending ids changed
    const shown = [...$("pending").rows].map((r) => r.dataset.id).join();
    if (shown !== pending.map((a) => String(a.id)).join()) renderPending(pending);
    renderDecided(rows.filter((a) => a.status !== "pending"));
    $("live").textContent = "live " + new Date().toISOString().slice(11, 19);
    if (!$("status").textContent.startsWith("approval ")) {
      $("status").textContent = `${pending.length} pending`;
    }
    timer = setTimeout(refresh, 1000);
  } catch (error) {
    $("status").textContent = "error " + error.message;
  }
}

$("login").addEventListener("submit", (event) => {
  event.preventDefault();
  const token = $("token").value.trim();
  if (token) sessionStorage.setItem("sandgate-token", token);
  if (sessionStorage.getItem("sandgate-token")) refresh();
});
if (sessionStorage.getItem("sandgate-token")) refresh();
