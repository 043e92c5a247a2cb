// Agent Runner dashboard: plain DOM, no framework, no build step.
// Data: GET /api/me, GET /api/agents, GET /api/agents/{id}; live: WS /api/ws (user channel)
// and the SSE stream GET /api/agents/{id}/events read with fetch (EventSource sends no headers).
"use strict";

const TOKEN_KEY = "agents.dashboard.token";
const PER_PAGE = 50;
const STATUSES = [
  "pending", "scheduled", "running", "paused", "awaiting_input", "awaiting_event",
  "completed", "failed", "cancelled",
];
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const ALLOWED = {
  pause: new Set(["pending", "scheduled", "running", "paused"]),
  resume: new Set(["paused"]),
  cancel: new Set(STATUSES.filter((s) => !TERMINAL.has(s)).concat(["cancelled"])),
  kill: new Set(STATUSES.filter((s) => !TERMINAL.has(s)).concat(["cancelled"])),
};

const state = {
  token: null,
  me: null,
  filter: "",
  page: 1,
  total: 0,
  items: [],        // the executions shown, newest first
  selected: null,   // id of the execution in the detail pane
  detail: null,     // its last fetched body
  ws: null,
  wsRetry: 0,
  wsTimer: null,
  stream: null,     // AbortController of the SSE fetch
  refetchTimer: null,
};

const $ = (id) => document.getElementById(id);

// ---- small DOM helpers (textContent only: nothing from the API is parsed as HTML) ----------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function badge(status) {
  return h("span", { class: `badge badge-${status}`, "data-status": status },
    status.replace("_", " "));
}

function shortId(id) {
  return String(id).slice(0, 8);
}

function fmtNumber(n) {
  return Number(n || 0).toLocaleString("en-US");
}

function age(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (seconds < 60) return `${Math.floor(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

const pad = (n) => String(n).padStart(2, "0");

function clock(date) {
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

function fmtTime(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${clock(d)}`;
}

// ---- HTTP ------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

async function api(method, path, token = state.token) {
  const response = await fetch(path, {
    method,
    headers: { Authorization: `Bearer ${token}`, Accept: "application/json" },
  });
  let body = null;
  try {
    body = await response.json();
  } catch (_) {
    body = null;
  }
  if (!response.ok) {
    if (response.status === 401 && token === state.token) signOut("Your token was refused.");
    throw new ApiError(response.status, body);
  }
  return body;
}

// ---- sign in / out ---------------------------------------------------------------------------

async function signIn(token) {
  const me = await api("GET", "/api/me", token);
  state.token = token;
  state.me = me;
  localStorage.setItem(TOKEN_KEY, token);
  $("who").textContent = me.email + (me.is_admin ? " · admin" : "");
  $("who").title = `${me.name || me.email} (${me.tier})`;
  $("signin-view").hidden = true;
  $("session").hidden = false;
  $("app-view").hidden = false;
  connectSocket();
  await loadList();
  route();
}

function signOut(message) {
  localStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  state.items = [];
  closeDetail(false);
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close(1000);
    state.ws = null;
  }
  clearTimeout(state.wsTimer);
  setLive("offline");
  $("rows").replaceChildren();
  $("session").hidden = true;
  $("app-view").hidden = true;
  $("signin-view").hidden = false;
  $("token").value = "";
  const error = $("signin-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("token").focus();
}

// ---- the list --------------------------------------------------------------------------------

async function loadList() {
  if (!state.token) return;
  const query = new URLSearchParams({ page: String(state.page), per_page: String(PER_PAGE) });
  if (state.filter) query.set("status", state.filter);
  const body = await api("GET", `/api/agents?${query}`);
  state.items = body.items;
  state.total = body.total;
  renderList();
}

function scheduleRefetch() {
  clearTimeout(state.refetchTimer);
  state.refetchTimer = setTimeout(() => loadList().catch(showError), 150);
}

function renderFilters() {
  const box = $("filters");
  box.replaceChildren(...["", ...STATUSES].map((status) =>
    h("button", {
      type: "button",
      class: "chip" + (state.filter === status ? " chip-on" : ""),
      "aria-pressed": String(state.filter === status),
      dataset: { status },
      onclick: () => {
        state.filter = status;
        state.page = 1;
        renderFilters();
        loadList().catch(showError);
      },
    }, status ? status.replace("_", " ") : "all")));
}

function renderList() {
  const rows = state.items.map((e) => h("tr", {
    class: "row" + (e.id === state.selected ? " selected" : ""),
    dataset: { id: e.id },
    onclick: () => select(e.id),
  },
  h("td", { class: "mono", title: e.id }, shortId(e.id),
    e.parent_id ? h("span", { class: "sub", title: `child of ${e.parent_id}` }, "↳") : null),
  h("td", {}, e.agent_type),
  h("td", { class: "status" }, badge(e.status)),
  h("td", { class: "num steps" }, fmtNumber(e.step_count)),
  h("td", { class: "num tokens" }, fmtNumber(e.token_usage)),
  h("td", { class: "num age", title: fmtTime(e.created_at), dataset: { created: e.created_at } },
    age(e.created_at))));
  $("rows").replaceChildren(...rows);
  $("empty").hidden = rows.length > 0;
  $("empty").textContent = state.filter ? `No ${state.filter.replace("_", " ")} executions.`
    : "No executions yet. Start one with POST /api/agents.";
  const pages = Math.max(1, Math.ceil(state.total / PER_PAGE));
  $("total").textContent = `${fmtNumber(state.total)} execution${state.total === 1 ? "" : "s"}`;
  $("page").textContent = `${state.page} / ${pages}`;
  $("prev").disabled = state.page <= 1;
  $("next").disabled = state.page >= pages;
}

function rowOf(id) {
  return $("rows").querySelector(`tr[data-id="${CSS.escape(id)}"]`);
}

function flash(row) {
  row.classList.remove("flash");
  void row.offsetWidth; // restart the animation
  row.classList.add("flash");
}

// A live event about one execution: update the row in place, or refetch when it is not shown.
function applyUpdate(data, event) {
  const id = data.execution_id;
  const item = state.items.find((e) => e.id === id);
  if (event === "status.changed") {
    if (!item) {
      // New (or not on this page): refetch unless a filter or a later page hides it anyway.
      if (state.page === 1 && (!state.filter || state.filter === data.status)) scheduleRefetch();
    } else if (state.filter && state.filter !== data.status) {
      scheduleRefetch();
    } else {
      item.status = data.status;
      item.step_count = data.step_count;
      item.token_usage = data.token_usage;
      item.completed_at = data.completed_at;
      updateRow(item);
    }
  } else if (event === "step.completed") {
    if (!item) {
      if (state.page === 1 && !state.filter) scheduleRefetch();
    } else {
      item.step_count = Math.max(item.step_count, data.step_number || 0);
      if (typeof data.tokens_used === "number") item.token_usage += data.tokens_used;
      updateRow(item);
    }
  }
  if (id === state.selected && state.detail) {
    if (data.status) state.detail.status = data.status;
    if (typeof data.step_count === "number") state.detail.step_count = data.step_count;
    if (typeof data.token_usage === "number") state.detail.token_usage = data.token_usage;
    if (typeof data.step_number === "number") {
      state.detail.step_count = Math.max(state.detail.step_count, data.step_number);
    }
    renderDetailHeader();
  }
}

function updateRow(item) {
  const row = rowOf(item.id);
  if (!row) return;
  row.querySelector(".status").replaceChildren(badge(item.status));
  row.querySelector(".steps").textContent = fmtNumber(item.step_count);
  row.querySelector(".tokens").textContent = fmtNumber(item.token_usage);
  flash(row);
}

// ---- WebSocket: user.<id>.agents -------------------------------------------------------------

function setLive(value) {
  const el = $("live");
  el.dataset.state = value;
  el.textContent = value;
}

function connectSocket() {
  if (!state.token || !state.me) return;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/api/ws?token=${encodeURIComponent(state.token)}`;
  const ws = new WebSocket(url);
  const channel = `user.${state.me.id}.agents`;
  state.ws = ws;
  setLive("connecting");
  ws.onopen = () => ws.send(JSON.stringify({ action: "subscribe", channel }));
  ws.onmessage = (message) => {
    let msg;
    try {
      msg = JSON.parse(message.data);
    } catch (_) {
      return;
    }
    if (msg.event === "subscribed" && msg.channel === channel) {
      const reconnected = state.wsRetry > 0;
      state.wsRetry = 0;
      setLive("live");
      if (reconnected) scheduleRefetch(); // catch up on what happened while away
    } else if (msg.event === "error") {
      showError(new Error(`live updates: ${msg.error}`));
    } else if (msg.channel === channel && msg.data) {
      applyUpdate(msg.data, msg.event);
    }
  };
  ws.onclose = (closing) => {
    if (state.ws !== ws) return;
    state.ws = null;
    setLive("offline");
    if (closing.code === 4401) {
      signOut("Your token was refused.");
      return;
    }
    const delay = Math.min(15000, 500 * 2 ** state.wsRetry++);
    state.wsTimer = setTimeout(connectSocket, delay);
  };
}

// ---- the detail pane -------------------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/agents\/([0-9a-f-]{36})$/);
  if (match) {
    if (match[1] !== state.selected) openDetail(match[1]);
  } else if (state.selected) {
    closeDetail(false);
  }
}

function select(id) {
  // A hash change, not a navigation: the page (and its socket) stay.
  if (location.hash !== `#/agents/${id}`) location.hash = `#/agents/${id}`;
  else openDetail(id);
}

function closeDetail(updateHash = true) {
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.selected = null;
  state.detail = null;
  $("detail").hidden = true;
  document.body.classList.remove("with-detail");
  for (const row of $("rows").querySelectorAll("tr.selected")) row.classList.remove("selected");
  if (updateHash && location.hash) history.replaceState(null, "", location.pathname);
}

async function openDetail(id) {
  if (state.stream) state.stream.abort();
  state.selected = id;
  state.detail = null;
  for (const row of $("rows").querySelectorAll("tr")) {
    row.classList.toggle("selected", row.dataset.id === id);
  }
  $("detail").hidden = false;
  document.body.classList.add("with-detail");
  $("log").replaceChildren();
  $("notice").hidden = true;
  $("d-id").textContent = id;
  $("d-type").textContent = "";
  $("d-status").replaceChildren();
  $("d-fields").replaceChildren();
  $("d-result").replaceChildren();
  try {
    await loadDetail(id);
  } catch (err) {
    showNotice(err.message, "error");
    return;
  }
  streamLogs(id);
}

async function loadDetail(id) {
  const body = await api("GET", `/api/agents/${id}`);
  if (state.selected !== id) return;
  state.detail = body;
  renderDetail();
}

function renderDetailHeader() {
  const d = state.detail;
  if (!d) return;
  $("d-type").textContent = d.agent_type;
  $("d-status").replaceChildren(badge(d.status));
  for (const button of document.querySelectorAll(".controls button")) {
    button.disabled = !ALLOWED[button.dataset.action].has(d.status);
  }
  const steps = $("d-fields").querySelector("[data-field=steps]");
  if (steps) steps.textContent = fmtNumber(d.step_count);
  const tokens = $("d-fields").querySelector("[data-field=tokens]");
  if (tokens) tokens.textContent = fmtNumber(d.token_usage);
}

function field(label, value, opts = {}) {
  return [h("dt", {}, label), h("dd", { class: opts.mono ? "mono" : "", dataset: opts.data },
    value === null || value === undefined || value === "" ? "—" : value)];
}

function renderDetail() {
  const d = state.detail;
  const prompt = d.input && typeof d.input.prompt === "string" ? d.input.prompt : null;
  $("d-fields").replaceChildren(...[
    field("Queue", d.queue, { mono: true }),
    field("Steps", fmtNumber(d.step_count), { data: { field: "steps" } }),
    field("Tokens", fmtNumber(d.token_usage), { data: { field: "tokens" } }),
    field("In / out", `${fmtNumber(d.usage.input_tokens)} / ${fmtNumber(d.usage.output_tokens)}`),
    field("Created", fmtTime(d.created_at)),
    field("Started", fmtTime(d.started_at)),
    field("Finished", fmtTime(d.completed_at)),
    d.parent_id ? field("Parent", h("a", { href: `#/agents/${d.parent_id}`, class: "mono" },
      shortId(d.parent_id))) : [],
    d.depth ? field("Depth", d.depth) : [],
  ].flat());
  const result = [];
  if (prompt !== null) result.push(h("h3", {}, "Prompt"), h("pre", { class: "block" }, prompt));
  if (d.output) {
    const text = typeof d.output.response === "string" ? d.output.response
      : JSON.stringify(d.output, null, 2);
    result.push(h("h3", {}, "Output"), h("pre", { class: "block block-ok" }, text));
  }
  if (d.error) {
    result.push(h("h3", {}, "Error"), h("pre", { class: "block block-error" },
      `${d.error.type || "error"}: ${d.error.message || JSON.stringify(d.error)}`));
  }
  if (d.metadata && d.metadata.question) {
    result.push(h("h3", {}, "Question"), h("pre", { class: "block" }, d.metadata.question));
  }
  $("d-result").replaceChildren(...result);
  $("d-children-box").hidden = !d.children.length;
  $("d-children").replaceChildren(...d.children.map((c) => h("tr", {
    class: "row", onclick: () => select(c.id),
  }, h("td", { class: "mono", title: c.id }, shortId(c.id)), h("td", {}, c.agent_type),
  h("td", {}, badge(c.status)), h("td", { class: "num" }, fmtNumber(c.step_count)))));
  renderDetailHeader();
}

function showNotice(text, kind = "info") {
  const el = $("notice");
  el.textContent = text;
  el.className = `notice notice-${kind}`;
  el.hidden = false;
}

function showError(err) {
  if (state.selected) showNotice(err.message, "error");
  else console.error(err); // eslint-disable-line no-console
}

async function control(action) {
  const id = state.selected;
  if (!id) return;
  const [method, path] = action === "kill" ? ["DELETE", `/api/agents/${id}`]
    : ["POST", `/api/agents/${id}/${action}`];
  try {
    const body = await api(method, path);
    showNotice(`${action}: ${body.accepted ? "done" : "nothing to do"}, now ${body.status}`);
    if (state.detail && state.selected === id) {
      state.detail.status = body.status;
      renderDetailHeader();
    }
  } catch (err) {
    showNotice(err.status === 409 ? `Refused: ${err.message}` : err.message, "error");
  }
}

// ---- the log: SSE over fetch -----------------------------------------------------------------

function logLine(event, id, data) {
  const time = data.timestamp ? clock(new Date(data.timestamp)) : "";
  let text;
  let kind = event;
  if (event === "step.completed") {
    const tools = data.tool_names && data.tool_names.length ? ` · ${data.tool_names.join(", ")}`
      : "";
    const tokens = data.tokens_used ? ` · ${fmtNumber(data.tokens_used)} tokens` : "";
    text = `Step ${data.step_number} completed${tools}${tokens}`;
  } else if (event === "status.changed") {
    text = `status → ${data.status}`;
  } else if (event === "finished") {
    text = `stream finished: ${data.status}`;
  } else {
    kind = `log-${data.level || "info"}`;
    text = data.message || JSON.stringify(data);
  }
  const line = h("li", { class: `log-line ${kind}`, dataset: { event, id: id || "" } },
    h("span", { class: "log-time mono" }, time),
    h("span", { class: "log-event mono" }, event),
    h("span", { class: "log-text" }, text));
  const log = $("log");
  const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
  log.append(line);
  if (stick) log.scrollTop = log.scrollHeight;
}

function parseFrame(frame) {
  let event = "message";
  let id = null;
  const data = [];
  for (const line of frame.split(/\r?\n/)) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const name = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (name === "event") event = value;
    else if (name === "id") id = value;
    else if (name === "data") data.push(value);
  }
  return data.length ? { event, id, data: data.join("\n") } : null;
}

async function streamLogs(id) {
  const controller = new AbortController();
  state.stream = controller;
  let lastId = null;
  let finished = false;
  let failures = 0;
  const status = $("stream-state");
  while (!finished && !controller.signal.aborted && state.selected === id) {
    status.textContent = "· connecting";
    try {
      const headers = { Authorization: `Bearer ${state.token}`, Accept: "text/event-stream" };
      if (lastId) headers["Last-Event-ID"] = lastId;
      const response = await fetch(`/api/agents/${id}/events`, {
        headers, signal: controller.signal, cache: "no-store",
      });
      if (!response.ok) {
        const body = await response.json().catch(() => null);
        throw new ApiError(response.status, body);
      }
      status.textContent = "· live";
      failures = 0;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        const frames = buffer.split(/\r?\n\r?\n/);
        buffer = frames.pop();
        for (const raw of frames) {
          const frame = parseFrame(raw);
          if (!frame) continue;
          if (frame.id) lastId = frame.id;
          let data = {};
          try {
            data = JSON.parse(frame.data);
          } catch (_) {
            data = { message: frame.data };
          }
          if (state.selected !== id) return;
          logLine(frame.event, frame.id, data);
          if (frame.event === "status.changed") applyUpdate(data, frame.event);
          if (frame.event === "finished") finished = true;
          if (frame.event === "finished" || (frame.event === "status.changed"
            && TERMINAL.has(data.status))) {
            loadDetail(id).catch(showError); // output, error and finish time
          }
        }
      }
    } catch (err) {
      if (controller.signal.aborted) return;
      if (err instanceof ApiError && err.status !== 503) {
        status.textContent = "";
        showNotice(err.message, "error");
        return;
      }
      failures += 1;
    }
    if (!finished) {
      status.textContent = "· reconnecting";
      await new Promise((resolve) => setTimeout(resolve, Math.min(10000, 500 * 2 ** failures)));
    }
  }
  if (state.selected === id) status.textContent = finished ? "· finished" : "";
}

// ---- wiring ----------------------------------------------------------------------------------

function init() {
  renderFilters();
  $("signin-form").addEventListener("submit", async (submit) => {
    submit.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    $("sign-in").disabled = true;
    try {
      await signIn(token);
    } catch (err) {
      $("signin-error").hidden = false;
      $("signin-error").textContent = err.status === 401 ? "That token is unknown or revoked."
        : `Could not sign in: ${err.message}`;
    } finally {
      $("sign-in").disabled = false;
    }
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("refresh").addEventListener("click", () => loadList().catch(showError));
  $("prev").addEventListener("click", () => {
    state.page = Math.max(1, state.page - 1);
    loadList().catch(showError);
  });
  $("next").addEventListener("click", () => {
    state.page += 1;
    loadList().catch(showError);
  });
  $("close-detail").addEventListener("click", () => closeDetail());
  for (const button of document.querySelectorAll(".controls button")) {
    button.addEventListener("click", () => control(button.dataset.action));
  }
  document.addEventListener("keydown", (key) => {
    if (key.key === "Escape" && state.selected) closeDetail();
  });
  window.addEventListener("hashchange", route);
  setInterval(() => {
    for (const cell of document.querySelectorAll("td.age")) {
      cell.textContent = age(cell.dataset.created);
    }
  }, 5000);

  const saved = localStorage.getItem(TOKEN_KEY);
  if (saved) {
    signIn(saved).catch((err) => signOut(err.status === 401 ? "Your saved token was refused."
      : `Could not sign in: ${err.message}`));
  } else {
    signOut();
  }
}

document.addEventListener("DOMContentLoaded", init);
