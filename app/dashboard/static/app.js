// Agent Runner dashboard: plain DOM, no framework, no build step.
// Data: GET /api/me, GET /api/agent-types, GET /api/agents, GET /api/agents/{id} and its
// /messages; actions: POST /api/agents (start), POST /api/agents/{id}/input (answer) and the
// controls; live: WS /api/ws (user channel) and the SSE stream GET /api/agents/{id}/events read
// with fetch (EventSource sends no headers).
// Admins also get every user's executions (GET /api/admin/agents, /api/admin/agents/{id} and its
// /logs and /stream, WS channel admin.agents) and the Queues page (queues.js).
"use strict";

const TOKEN_KEY = "agents.dashboard.token";
const PER_PAGE = 50;
const MESSAGES_PAGE = 200;
const STATUSES = [
  "pending", "scheduled", "running", "paused", "awaiting_input", "awaiting_event",
  "completed", "failed", "cancelled",
];
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const ADMIN_CHANNEL = "admin.agents";
const ADMIN_LOGS_PAGE = 100;
const EVENT_TYPES = [
  "step_completed", "status_changed", "paused", "resumed", "cancelled", "force_killed",
  "input_received", "subagents_finished", "event_waiting", "event_received", "event_timeout",
  "completed", "failed", "tool_called", "tool_completed", "warning",
];
const ALLOWED = {
  pause: new Set(["pending", "scheduled", "running", "paused"]),
  resume: new Set(["paused"]),
  cancel: new Set(STATUSES.filter((s) => !TERMINAL.has(s)).concat(["cancelled"])),
  kill: new Set(STATUSES.filter((s) => !TERMINAL.has(s)).concat(["cancelled"])),
};

const state = {
  token: null,
  me: null,
  view: "mine",     // mine | all (admins: every user's executions) | queues (admins)
  filter: "",
  adminFilter: { user: "", type: "" },
  users: new Map(), // user id -> email, of the owners seen in the admin list
  seenTypes: new Set(),
  adminLogs: null,  // the stored logs shown (admin view): { id, page, total }
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
  detailTimer: null,
  types: null,      // GET /api/agent-types items, once signed in
  conv: null,       // the conversation shown: { id, after (last seq), count, calls, … }
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

async function api(method, path, { token = state.token, body } = {}) {
  const headers = { Authorization: `Bearer ${token}`, Accept: "application/json" };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  let answer = null;
  try {
    answer = await response.json();
  } catch (_) {
    answer = null;
  }
  if (!response.ok) {
    if (response.status === 401 && token === state.token) signOut("Your token was refused.");
    throw new ApiError(response.status, answer);
  }
  return answer;
}

// ---- sign in / out ---------------------------------------------------------------------------

async function signIn(token) {
  const me = await api("GET", "/api/me", { token });
  state.token = token;
  state.me = me;
  localStorage.setItem(TOKEN_KEY, token);
  $("who").textContent = me.email + (me.is_admin ? " · admin" : "");
  $("who").title = `${me.name || me.email} (${me.tier})`;
  $("signin-view").hidden = true;
  $("session").hidden = false;
  $("admin-nav").hidden = !isAdmin();
  connectSocket();
  loadAgentTypes().catch((err) => setFormError("start-error", err.message));
  await route(true);
}

function isAdmin() {
  return Boolean(state.me && state.me.is_admin);
}

function signOut(message) {
  localStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.me = null;
  state.items = [];
  state.types = null;
  state.view = "mine";
  state.adminFilter = { user: "", type: "" };
  state.users.clear();
  state.seenTypes.clear();
  closeDetail(false);
  stopQueues();
  toggleStartForm(false);
  $("start-prompt").value = "";
  if (state.ws) {
    state.ws.onclose = null;
    state.ws.close(1000);
    state.ws = null;
  }
  clearTimeout(state.wsTimer);
  setLive("offline");
  $("rows").replaceChildren();
  $("session").hidden = true;
  $("admin-nav").hidden = true;
  $("app-view").hidden = true;
  $("queues-view").hidden = true;
  $("signin-view").hidden = false;
  $("token").value = "";
  const error = $("signin-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("token").focus();
}

// ---- the list --------------------------------------------------------------------------------

async function loadList() {
  if (!state.token || state.view === "queues") return;
  const view = state.view;
  const query = new URLSearchParams({ page: String(state.page) });
  if (state.filter) query.set("status", state.filter);
  let path = "/api/agents";
  if (view === "all") {
    path = "/api/admin/agents";
    if (state.adminFilter.user) query.set("user_id", state.adminFilter.user);
    if (state.adminFilter.type) query.set("agent_type", state.adminFilter.type);
  } else {
    query.set("per_page", String(PER_PAGE));
  }
  const body = await api("GET", `${path}?${query}`);
  if (state.view !== view) return;
  state.items = body.items;
  state.total = body.total;
  if (view === "all") rememberOwners(body.items);
  renderList();
}

// ---- admin: every user's executions ----------------------------------------------------------

function rememberOwners(items) {
  let changed = false;
  for (const e of items) {
    if (e.user && state.users.get(e.user.id) !== e.user.email) {
      state.users.set(e.user.id, e.user.email);
      changed = true;
    }
    if (!state.seenTypes.has(e.agent_type)) {
      state.seenTypes.add(e.agent_type);
      changed = true;
    }
  }
  if (changed) renderAdminFilters();
}

function renderAdminFilters() {
  $("f-users").replaceChildren(...[...state.users].sort((a, b) => a[0] - b[0])
    .map(([id, email]) => h("option", { value: id, label: email }, email)));
  const names = new Set([...state.seenTypes, ...(state.types || []).map((t) => t.name)]);
  if (state.adminFilter.type) names.add(state.adminFilter.type);
  const picker = $("f-type");
  picker.replaceChildren(h("option", { value: "" }, "any"),
    ...[...names].sort().map((name) => h("option", { value: name }, name)));
  picker.value = state.adminFilter.type;
  if ($("f-user").value !== state.adminFilter.user) $("f-user").value = state.adminFilter.user;
  $("f-clear").hidden = !state.adminFilter.user && !state.adminFilter.type;
}

function setAdminFilter(change) {
  Object.assign(state.adminFilter, change);
  state.page = 1;
  renderAdminFilters();
  loadList().catch(showError);
}

function ownerCell(e) {
  const user = e.user || (state.me && e.user_id === state.me.id ? state.me : null);
  if (!user) return h("td", { class: "col-user muted" }, "—");
  return h("td", { class: "col-user" }, h("a", {
    href: "#", class: "owner", title: `Only user ${user.id}'s executions`,
    onclick: (click) => {
      click.preventDefault();
      click.stopPropagation();
      setAdminFilter({ user: String(user.id) });
    },
  }, user.email));
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
  state.view === "all" ? ownerCell(e) : null,
  h("td", { class: "type" }, e.agent_type),
  h("td", { class: "status" }, badge(e.status)),
  h("td", { class: "num steps" }, fmtNumber(e.step_count)),
  h("td", { class: "num tokens" }, fmtNumber(e.token_usage)),
  h("td", { class: "num age", title: fmtTime(e.created_at), dataset: { created: e.created_at } },
    age(e.created_at))));
  $("rows").replaceChildren(...rows);
  $("empty").hidden = rows.length > 0;
  const filtered = state.filter || (state.view === "all"
    && (state.adminFilter.user || state.adminFilter.type));
  $("empty").textContent = filtered ? "No executions match the filters."
    : "No executions yet. Start one with + New execution.";
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
  if (id === state.selected) {
    scheduleConversation();
    scheduleAdminLogs();
    // Output, error, the question of an execution awaiting input, new children.
    if (event === "status.changed") scheduleDetailReload();
  } else if (event === "status.changed") {
    updateChild(id, data);
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

// ---- starting an execution ------------------------------------------------------------------

async function loadAgentTypes() {
  const body = await api("GET", "/api/agent-types");
  state.types = body.items;
  renderTypePicker();
  if (state.view === "all") renderAdminFilters();
}

function typeOption(t) {
  return h("option", {
    value: t.name, disabled: !t.available, title: t.unavailable || t.description,
  }, t.available ? t.name : `${t.name} — ${t.unavailable}`);
}

function renderTypePicker() {
  const picker = $("start-type");
  const previous = picker.value;
  const usable = state.types.filter((t) => t.available);
  const blocked = state.types.filter((t) => !t.available);
  picker.replaceChildren(...usable.map(typeOption), blocked.length
    ? h("optgroup", { label: "Cannot run here" }, blocked.map(typeOption)) : null);
  const chosen = usable.find((t) => t.name === previous) || usable.find((t) => t.name === "demo")
    || usable[0];
  picker.value = chosen ? chosen.name : "";
  $("start").disabled = !chosen;
  renderTypeInfo();
}

function chips(names, extra = "") {
  if (!names || !names.length) return null;
  return h("span", { class: "chips" },
    names.map((name) => h("span", { class: `tag ${extra}`.trim() }, name)));
}

function fmtDuration(seconds) {
  if (seconds < 120) return `${fmtNumber(seconds)} s`;
  if (seconds < 7200) return `${fmtNumber(Math.round(seconds / 60))} min`;
  return `${fmtNumber(Math.round(seconds / 360) / 10)} h`;
}

function renderTypeInfo() {
  const box = $("type-info");
  const t = (state.types || []).find((x) => x.name === $("start-type").value);
  if (!t) {
    box.replaceChildren(h("p", { class: "muted" },
      state.types ? "No agent type can run here." : "Loading agent types…"));
    return;
  }
  box.replaceChildren(
    h("div", { class: "type-name" }, t.name,
      h("span", { class: "muted small mono" }, `${t.provider} · ${t.model}`)),
    h("p", { class: "type-desc" }, t.description || "No description."),
    h("dl", { class: "fields fields-tight" }, [
      field("Capabilities", chips(t.capabilities)),
      field("Tools", chips(t.tools, "mono")),
      t.subagents.length ? field("Subagents", chips(t.subagents)) : [],
      field("Queue", t.queue, { mono: true }),
      field("Limits", `${fmtNumber(t.max_steps)} steps · ${fmtNumber(t.max_tokens)} tokens · `
        + fmtDuration(t.timeout_seconds)),
    ].flat()));
}

function setFormError(id, message) {
  $(id).hidden = !message;
  $(id).textContent = message || "";
}

function toggleStartForm(open) {
  const form = $("start-form");
  const show = open === undefined ? form.hidden : open;
  form.hidden = !show;
  $("new-execution").setAttribute("aria-expanded", String(show));
  if (!show) return;
  if (!state.types) {
    loadAgentTypes().then(() => setFormError("start-error", null))
      .catch((err) => setFormError("start-error", err.message));
  }
  $("start-prompt").focus();
}

async function startExecution(submit) {
  submit.preventDefault();
  const agentType = $("start-type").value;
  const prompt = $("start-prompt").value;
  if (!agentType || !prompt.trim()) return;
  setFormError("start-error", null);
  $("start").disabled = true;
  try {
    const created = await api("POST", "/api/agents", {
      body: { agent_type: agentType, input: { prompt } },
    });
    $("start-prompt").value = "";
    showStarted(created);
  } catch (err) {
    setFormError("start-error", err.message);
  } finally {
    $("start").disabled = !$("start-type").value;
  }
}

// Put the new execution at the top of the list (unless a filter or a page hides it) and open it.
function showStarted(execution) {
  if (state.page !== 1 || (state.filter && state.filter !== execution.status)) {
    state.page = 1;
    state.filter = "";
    renderFilters();
    scheduleRefetch();
  } else if (!state.items.some((e) => e.id === execution.id)) {
    state.items.unshift(execution);
    if (state.items.length > PER_PAGE) state.items.pop();
    state.total += 1;
    renderList();
  }
  select(execution.id);
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
  ws.onopen = () => {
    ws.send(JSON.stringify({ action: "subscribe", channel }));
    if (isAdmin()) ws.send(JSON.stringify({ action: "subscribe", channel: ADMIN_CHANNEL }));
  };
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
    } else if (msg.data && msg.channel === (state.view === "all" ? ADMIN_CHANNEL : channel)) {
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

// #/agents/{id}: one of yours; admins also #/all, #/all/agents/{id} and #/queues.
function parseHash() {
  const hash = location.hash;
  let match = hash.match(/^#\/agents\/([0-9a-f-]{36})$/);
  if (match) return { view: "mine", id: match[1] };
  if (!isAdmin()) return { view: "mine", id: null };
  if (hash === "#/queues") return { view: "queues", id: null };
  match = hash.match(/^#\/all(?:\/agents\/([0-9a-f-]{36}))?$/);
  if (match) return { view: "all", id: match[1] || null };
  return { view: "mine", id: null };
}

function agentHref(id) {
  return state.view === "all" ? `#/all/agents/${id}` : `#/agents/${id}`;
}

async function route(force = false) {
  if (!state.me) return;
  const { view, id } = parseHash();
  const changed = view !== state.view;
  if (changed) {
    closeDetail(false);
    state.view = view;
    state.page = 1;
    state.items = [];
    $("rows").replaceChildren();
  }
  document.body.dataset.view = view;
  for (const link of document.querySelectorAll("#admin-nav a")) {
    link.classList.toggle("active", link.dataset.view === view);
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  $("app-view").hidden = view === "queues";
  $("queues-view").hidden = view !== "queues";
  $("new-execution").hidden = view === "queues";
  $("admin-filters").hidden = view !== "all";
  if (view === "queues") {
    startQueues();
    return;
  }
  stopQueues();
  if (view === "all") renderAdminFilters();
  if (changed || force) await loadList();
  if (id) {
    if (id !== state.selected) openDetail(id);
  } else if (state.selected) {
    closeDetail(false);
  }
}

function select(id) {
  // A hash change, not a navigation: the page (and its socket) stay.
  const href = agentHref(id);
  if (location.hash !== href) location.hash = href;
  else openDetail(id);
}

function closeDetail(updateHash = true) {
  if (state.stream) state.stream.abort();
  state.stream = null;
  state.selected = null;
  state.detail = null;
  state.conv = null;
  clearTimeout(state.detailTimer);
  $("detail").hidden = true;
  document.body.classList.remove("with-detail");
  for (const row of $("rows").querySelectorAll("tr.selected")) row.classList.remove("selected");
  if (updateHash && location.hash) {
    history.replaceState(null, "", state.view === "all" ? "#/all" : location.pathname);
  }
}

async function openDetail(id) {
  if (state.stream) state.stream.abort();
  state.selected = id;
  state.detail = null;
  clearTimeout(state.detailTimer);
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
  $("d-parent").hidden = true;
  $("d-fields").replaceChildren();
  $("d-result").replaceChildren();
  $("d-children-box").hidden = true;
  $("answer-form").hidden = true;
  $("answer").value = "";
  setFormError("answer-error", null);
  resetConversation(id);
  resetAdminLogs(id);
  try {
    await loadDetail(id);
  } catch (err) {
    showNotice(err.message, "error");
    return;
  }
  loadConversation().catch(showError);
  if (state.adminLogs) loadAdminLogs().catch(showError);
  streamLogs(id);
}

async function loadDetail(id) {
  const body = await api("GET", state.view === "all" ? `/api/admin/agents/${id}`
    : `/api/agents/${id}`);
  if (state.selected !== id) return;
  state.detail = body;
  renderDetail();
}

function scheduleDetailReload() {
  const id = state.selected;
  clearTimeout(state.detailTimer);
  state.detailTimer = setTimeout(() => {
    if (state.selected === id) loadDetail(id).catch(showError);
  }, 150);
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
  $("answer-form").hidden = d.status !== "awaiting_input";
}

function field(label, value, opts = {}) {
  return [h("dt", {}, label), h("dd", { class: opts.mono ? "mono" : "", dataset: opts.data },
    value === null || value === undefined || value === "" ? "—" : value)];
}

function renderParent(d) {
  $("d-parent").hidden = !d.parent_id;
  if (!d.parent_id) return;
  const parent = state.items.find((e) => e.id === d.parent_id);
  const link = $("d-parent-link");
  link.href = agentHref(d.parent_id);
  link.title = d.parent_id;
  link.textContent = parent ? `${parent.agent_type} ${shortId(d.parent_id)}` : shortId(d.parent_id);
}

function renderQuestion(d) {
  const question = d.metadata && typeof d.metadata.question === "string" ? d.metadata.question
    : null;
  $("d-question").textContent = question || "(the question was not recorded)";
}

function renderChildren(d) {
  $("d-children-box").hidden = !d.children.length;
  $("d-children").replaceChildren(...d.children.map((c) => h("tr", {
    class: "row",
    dataset: { id: c.id },
    onclick: (click) => {
      if (!click.target.closest("a")) select(c.id);
    },
  },
  h("td", {}, h("a", { href: agentHref(c.id), class: "mono child-link", title: c.id },
    shortId(c.id))),
  h("td", {}, c.agent_type),
  h("td", { class: "status" }, badge(c.status)),
  h("td", { class: "num steps" }, fmtNumber(c.step_count)))));
}

// A status change of one of the open execution's children: follow it in the children table.
function updateChild(id, data) {
  const d = state.detail;
  const child = d && d.children.find((c) => c.id === id);
  if (!child) return;
  child.status = data.status;
  if (typeof data.step_count === "number") child.step_count = data.step_count;
  renderChildren(d);
}

function renderDetail() {
  const d = state.detail;
  const prompt = d.input && typeof d.input.prompt === "string" ? d.input.prompt : null;
  $("d-fields").replaceChildren(...[
    d.user ? field("Owner", `${d.user.email} (user ${d.user.id})`) : [],
    field("Queue", d.queue, { mono: true }),
    field("Steps", fmtNumber(d.step_count), { data: { field: "steps" } }),
    field("Tokens", fmtNumber(d.token_usage), { data: { field: "tokens" } }),
    field("In / out", `${fmtNumber(d.usage.input_tokens)} / ${fmtNumber(d.usage.output_tokens)}`),
    field("Created", fmtTime(d.created_at)),
    field("Started", fmtTime(d.started_at)),
    field("Finished", fmtTime(d.completed_at)),
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
  $("d-result").replaceChildren(...result);
  renderParent(d);
  renderQuestion(d);
  renderChildren(d);
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

async function sendAnswer(submit) {
  submit.preventDefault();
  const id = state.selected;
  const answer = $("answer").value;
  if (!id || !answer.trim()) return;
  setFormError("answer-error", null);
  $("send-answer").disabled = true;
  try {
    const body = await api("POST", `/api/agents/${id}/input`, { body: { input: { answer } } });
    if (state.selected !== id) return;
    $("answer").value = "";
    showNotice(`Answer ${body.accepted ? "sent" : "not taken"}, now ${body.status}`);
    if (state.detail) {
      state.detail.status = body.status;
      renderDetailHeader();
    }
  } catch (err) {
    if (state.selected === id) {
      setFormError("answer-error", err.status === 409 ? `Refused: ${err.message}` : err.message);
    }
  } finally {
    $("send-answer").disabled = false;
  }
}

// ---- the conversation: GET /api/agents/{id}/messages, after the last seq shown ---------------

function resetConversation(id) {
  if (state.conv) clearTimeout(state.conv.timer);
  state.conv = {
    id, after: null, count: 0, calls: new Map(), busy: false, again: false, timer: null,
  };
  $("conversation").replaceChildren();
  $("conv-state").textContent = "";
}

function scheduleConversation() {
  const conv = state.conv;
  if (!conv) return;
  clearTimeout(conv.timer);
  conv.timer = setTimeout(() => loadConversation().catch(showError), 100);
}

async function loadConversation() {
  const conv = state.conv;
  if (!conv || conv.id !== state.selected) return;
  if (conv.busy) {
    conv.again = true; // one more page once the current fetch is in
    return;
  }
  conv.busy = true;
  $("conversation").toggleAttribute("data-loading", conv.after === null);
  try {
    for (;;) {
      conv.again = false;
      const query = new URLSearchParams({ limit: String(MESSAGES_PAGE) });
      if (conv.after !== null) query.set("after_seq", String(conv.after));
      const page = await api("GET", `/api/agents/${conv.id}/messages?${query}`);
      if (state.conv !== conv) return;
      appendMessages(conv, page);
      if (page.length < MESSAGES_PAGE && !conv.again) break;
    }
  } finally {
    conv.busy = false;
    if (state.conv === conv) $("conversation").removeAttribute("data-loading");
  }
}

function appendMessages(conv, messages) {
  const list = $("conversation");
  const stick = list.scrollTop + list.clientHeight >= list.scrollHeight - 8;
  for (const message of messages) {
    if (conv.after !== null && message.seq <= conv.after) continue;
    conv.after = message.seq;
    conv.count += 1;
    const item = renderMessage(conv, message);
    if (item) list.append(item);
  }
  const count = conv.count;
  $("conv-state").textContent = count ? `· ${count} message${count === 1 ? "" : "s"}` : "";
  if (stick) list.scrollTop = list.scrollHeight;
}

function msgHead(role, message) {
  return h("div", { class: "msg-head" }, h("span", { class: "msg-role" }, role),
    h("span", { class: "muted small" }, message.created_at ? clock(new Date(message.created_at))
      : ""));
}

function renderMessage(conv, m) {
  const attrs = (kind) => ({ class: `msg msg-${kind}`, dataset: { seq: m.seq, role: m.role } });
  if (m.role === "system") {
    return h("li", attrs("system"), h("details", { class: "fold" },
      h("summary", {}, "system prompt"), h("pre", { class: "fold-body" }, m.content || "")));
  }
  if (m.role === "tool") {
    const call = conv.calls.get(m.tool_call_id);
    if (call) {
      addToolResult(call, m);
      return null;
    }
    const fold = toolFold(m.name || "tool", "");
    addToolResult(fold, m);
    return h("li", attrs("tool"), fold);
  }
  const kind = m.role === "user" ? "user" : "assistant";
  const item = h("li", attrs(kind), msgHead(m.role, m),
    m.content ? h("div", { class: "msg-text" }, m.content) : null);
  for (const call of m.tool_calls || []) {
    const fold = toolCallFold(call);
    conv.calls.set(call.id, fold);
    item.append(fold);
  }
  return item;
}

function preview(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  const line = (text || "").replace(/\s+/g, " ").trim();
  return line.length > 70 ? `${line.slice(0, 69)}…` : line;
}

function toolFold(name, hint) {
  return h("details", { class: "fold tool", dataset: { tool: name } },
    h("summary", {}, h("span", { class: "tool-name mono" }, name),
      h("span", { class: "tool-hint mono" }, hint),
      h("span", { class: "tool-state" }, "no result yet")));
}

function toolCallFold(call) {
  const args = call.invalid_arguments !== null && call.invalid_arguments !== undefined
    ? call.invalid_arguments : call.arguments;
  const fold = toolFold(call.name, preview(args));
  fold.classList.add("tool-call");
  fold.dataset.callId = call.id;
  if (typeof args === "string") {
    fold.append(h("div", { class: "fold-label" }, "Arguments (not valid JSON)"),
      h("pre", { class: "fold-body tool-args block-error" }, args));
  } else {
    fold.append(h("div", { class: "fold-label" }, "Arguments"),
      h("pre", { class: "fold-body tool-args" }, JSON.stringify(args || {}, null, 2)));
  }
  return fold;
}

function addToolResult(fold, m) {
  const mark = fold.querySelector(".tool-state");
  mark.textContent = "result";
  mark.classList.add("tool-done");
  fold.append(h("div", { class: "fold-label" }, "Result"),
    h("pre", { class: "fold-body tool-result", dataset: { seq: m.seq } }, m.content || ""));
}

// ---- admin: the stored logs of an execution, filtered by level and event type -----------------

function resetAdminLogs(id) {
  if (state.adminLogs) clearTimeout(state.adminLogs.timer);
  state.adminLogs = state.view === "all" ? { id, page: 1, total: 0, timer: null } : null;
  $("admin-logs-box").hidden = !state.adminLogs;
  $("admin-logs").replaceChildren();
  $("admin-logs-count").textContent = "";
}

function scheduleAdminLogs() {
  const logs = state.adminLogs;
  if (!logs) return;
  clearTimeout(logs.timer);
  logs.timer = setTimeout(() => loadAdminLogs().catch(showError), 300);
}

async function loadAdminLogs() {
  const logs = state.adminLogs;
  if (!logs) return;
  const query = new URLSearchParams({ page: String(logs.page) });
  if ($("l-level").value) query.set("level", $("l-level").value);
  if ($("l-event").value) query.set("event_type", $("l-event").value);
  const body = await api("GET", `/api/admin/agents/${logs.id}/logs?${query}`);
  if (state.adminLogs !== logs) return;
  logs.total = body.total;
  const pages = Math.max(1, Math.ceil(body.total / ADMIN_LOGS_PAGE));
  $("admin-logs-count").textContent = `· ${fmtNumber(body.total)} matching`;
  $("l-page").textContent = `${logs.page} / ${pages}`;
  $("l-prev").disabled = logs.page <= 1;
  $("l-next").disabled = logs.page >= pages;
  $("admin-logs").replaceChildren(...body.items.map((entry) => h("li", {
    class: `log-line log-${entry.level}`,
    dataset: { id: entry.id, level: entry.level, event: entry.event_type },
  },
  h("span", { class: "log-time mono", title: fmtTime(entry.created_at) },
    clock(new Date(entry.created_at))),
  h("span", { class: "log-event mono" }, entry.event_type),
  h("span", { class: "log-text" }, entry.level === "info" ? entry.message
    : `[${entry.level}] ${entry.message}`))));
}

function turnAdminLogsPage(delta) {
  if (!state.adminLogs) return;
  state.adminLogs.page = Math.max(1, state.adminLogs.page + delta);
  loadAdminLogs().catch(showError);
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
      const path = state.view === "all" ? `/api/admin/agents/${id}/stream`
        : `/api/agents/${id}/events`;
      const response = await fetch(path, {
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
          // status.changed also reloads the detail (output, error, question, children).
          if (frame.event === "status.changed") applyUpdate(data, frame.event);
          if (frame.event === "step.completed") scheduleConversation();
          if (frame.event === "finished") {
            finished = true;
            scheduleDetailReload();
            scheduleConversation();
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
  $("l-event").append(...EVENT_TYPES.map((name) => h("option", { value: name }, name)));
  for (const id of ["l-level", "l-event"]) {
    $(id).addEventListener("change", () => {
      if (state.adminLogs) state.adminLogs.page = 1;
      loadAdminLogs().catch(showError);
    });
  }
  $("l-prev").addEventListener("click", () => turnAdminLogsPage(-1));
  $("l-next").addEventListener("click", () => turnAdminLogsPage(1));
  $("f-user").addEventListener("change", () => {
    const value = $("f-user").value.trim();
    setAdminFilter({ user: /^[1-9][0-9]*$/.test(value) ? value : "" });
  });
  $("f-type").addEventListener("change", () => setAdminFilter({ type: $("f-type").value }));
  $("f-clear").addEventListener("click", () => setAdminFilter({ user: "", type: "" }));
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
  $("new-execution").addEventListener("click", () => toggleStartForm());
  $("start-close").addEventListener("click", () => toggleStartForm(false));
  $("start-type").addEventListener("change", renderTypeInfo);
  $("start-form").addEventListener("submit", startExecution);
  $("answer-form").addEventListener("submit", sendAnswer);
  for (const [area, form] of [["start-prompt", "start-form"], ["answer", "answer-form"]]) {
    $(area).addEventListener("keydown", (key) => {
      if (key.key === "Enter" && (key.ctrlKey || key.metaKey)) $(form).requestSubmit();
    });
  }
  for (const button of document.querySelectorAll(".controls button")) {
    button.addEventListener("click", () => control(button.dataset.action));
  }
  document.addEventListener("keydown", (key) => {
    if (key.key !== "Escape" || !state.selected) return;
    if (key.target.closest && key.target.closest("input, textarea, select")) return;
    closeDetail();
  });
  window.addEventListener("hashchange", () => route().catch(showError));
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
