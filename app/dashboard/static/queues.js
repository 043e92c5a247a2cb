// The Queues page (admins): the numbers now from GET /api/admin/queues and, per minute,
// GET /api/admin/queues/history, polled every few seconds. Charts by uPlot (vendor/, MIT),
// loaded on the first visit. Shares app.js's globals: $, h, api, state and the formatters.
"use strict";

const QUEUES_POLL_MS = 4000;
const CHART_HEIGHT = 220;
const QUEUE_COLORS = ["#2f6fed", "#7a3fc4", "#0e8a9a", "#c77700", "#177245", "#c02626", "#5e6673"];
const THROUGHPUT_SERIES = [
  { key: "started", label: "started", stroke: "#2f6fed" },
  { key: "completed", label: "completed", stroke: "#34a26a" },
  { key: "failed", label: "failed", stroke: "#d33b3b" },
];

const queuesPage = { timer: null, busy: false, charts: {}, now: null, history: null, lib: null };

function loadUPlot() {
  if (!queuesPage.lib) {
    queuesPage.lib = new Promise((resolve, reject) => {
      const script = h("script", { src: "/dashboard/static/vendor/uPlot.iife.min.js" });
      script.addEventListener("load", () => resolve(window.uPlot));
      script.addEventListener("error", () => {
        queuesPage.lib = null;
        reject(new Error("Could not load the charting library."));
      });
      document.head.append(
        h("link", { rel: "stylesheet", href: "/dashboard/static/vendor/uPlot.min.css" }), script);
    });
  }
  return queuesPage.lib;
}

function startQueues() {
  if (queuesPage.timer) return;
  queuesPage.timer = setInterval(pollQueues, QUEUES_POLL_MS);
  pollQueues();
}

function stopQueues() {
  clearInterval(queuesPage.timer);
  queuesPage.timer = null;
}

async function pollQueues() {
  if (queuesPage.busy || state.view !== "queues" || document.hidden) return;
  queuesPage.busy = true;
  try {
    const [now, history] = await Promise.all([
      api("GET", "/api/admin/queues"),
      api("GET", `/api/admin/queues/history?minutes=${$("q-minutes").value}`),
      loadUPlot(),
    ]);
    if (state.view !== "queues") return;
    queuesPage.now = now;
    queuesPage.history = history;
    renderQueues();
    $("q-error").hidden = true;
    $("q-updated").textContent = `· live, updated ${clock(new Date())}`;
  } catch (err) {
    $("q-error").hidden = false;
    $("q-error").textContent = err.message;
  } finally {
    queuesPage.busy = false;
  }
}

function renderQueues() {
  renderQueuePicker();
  renderQueueTable();
  renderCharts();
  renderWorkers();
}

// ---- the numbers now -------------------------------------------------------------------------

function fmtSeconds(value) {
  if (value === null || value === undefined) return "—";
  if (value < 10) return `${value.toFixed(2)} s`;
  if (value < 120) return `${value.toFixed(1)} s`;
  return fmtDuration(Math.round(value));
}

function twoCounts(counts) {
  return `${fmtNumber(counts.last_minute)} / ${fmtNumber(counts.last_hour)}`;
}

function twoTimes(times) {
  return `${fmtSeconds(times.mean)} / ${fmtSeconds(times.p95)}`;
}

function renderQueuePicker() {
  const picker = $("q-queue");
  const chosen = picker.value;
  const names = queuesPage.history.queues.map((q) => q.name);
  picker.replaceChildren(h("option", { value: "" }, "every queue"),
    ...names.map((name) => h("option", { value: name }, name)));
  picker.value = names.includes(chosen) ? chosen : "";
}

function renderQueueTable() {
  const chosen = $("q-queue").value;
  $("q-rows").replaceChildren(...queuesPage.now.queues.map((q) => h("tr", {
    class: "row" + (q.name === chosen ? " selected" : ""),
    dataset: { queue: q.name },
    title: "Chart this queue alone",
    onclick: () => {
      $("q-queue").value = q.name === $("q-queue").value ? "" : q.name;
      renderQueueTable();
      renderCharts();
    },
  },
  h("td", { class: "mono" }, h("span", { class: "swatch", dataset: { color: colorOf(q.name) } }),
    q.name),
  h("td", { class: "num queued" }, fmtNumber(q.queued)),
  h("td", { class: "num" }, fmtSeconds(q.oldest_wait_seconds)),
  h("td", { class: "num running" }, fmtNumber(q.running)),
  h("td", { class: "num" }, fmtNumber(q.awaiting)),
  h("td", { class: "num" }, twoCounts(q.started)),
  h("td", { class: "num" }, twoCounts(q.completed)),
  h("td", { class: "num" + (q.failed.last_hour ? " bad" : "") }, twoCounts(q.failed)),
  h("td", { class: "num" }, twoTimes(q.wait_seconds)),
  h("td", { class: "num" }, twoTimes(q.run_seconds)))));
  for (const swatch of $("q-rows").querySelectorAll(".swatch")) {
    swatch.style.background = swatch.dataset.color; // CSSOM, not an inline style attribute
  }
}

function renderWorkers() {
  const workers = queuesPage.now.workers;
  const nowSeconds = Date.now() / 1000;
  $("q-workers").replaceChildren(...workers.map((w) => {
    const started = new Date(w.started_at * 1000).toISOString();
    return h("tr", { dataset: { id: w.id } },
      h("td", { class: "mono host" }, w.host),
      h("td", { class: "num mono pid" }, w.pid),
      h("td", {}, chips(w.queues, "mono")),
      h("td", { class: "num in-flight" }, fmtNumber(w.running)),
      h("td", { class: "num" }, `${w.rss_mb.toFixed(1)} MB`),
      h("td", { title: fmtTime(started) }, `${fmtTime(started)} · ${age(started)} ago`),
      h("td", { class: "num" }, `${Math.max(0, Math.round(nowSeconds - w.seen_at))} s ago`));
  }));
  $("q-no-workers").hidden = workers.length > 0;
  $("q-workers-count").textContent = `· ${workers.length} live`;
}

// ---- the charts ------------------------------------------------------------------------------

function colorOf(name) {
  const names = queuesPage.history ? queuesPage.history.queues.map((q) => q.name) : [];
  const index = names.indexOf(name);
  return QUEUE_COLORS[(index < 0 ? names.length : index) % QUEUE_COLORS.length];
}

function renderCharts() {
  const history = queuesPage.history;
  const chosen = $("q-queue").value;
  const focus = history.queues.find((q) => q.name === chosen) || history.overall;
  const xs = focus.minutes.map((m) => Date.parse(m.at) / 1000);
  const depthOf = chosen ? [focus] : history.queues;
  drawChart("depth",
    depthOf.map((q) => ({ label: q.name, stroke: colorOf(q.name) })),
    [xs, ...depthOf.map((q) => q.minutes.map((m) => m.depth))],
    { gaps: true, format: fmtNumber });
  drawChart("throughput", THROUGHPUT_SERIES,
    [xs, ...THROUGHPUT_SERIES.map((s) => focus.minutes.map((m) => m[s.key]))],
    { format: fmtNumber });
  drawChart("wait",
    [{ label: "mean", stroke: "#2f6fed" }, { label: "p95", stroke: "#c77700" }],
    [xs, focus.minutes.map((m) => m.wait_seconds.mean),
      focus.minutes.map((m) => m.wait_seconds.p95)],
    { points: true, format: fmtSeconds });
}

function chartWidth(el) {
  return Math.max(260, el.clientWidth);
}

function roomAbove(u, min, max) {
  const top = Math.max(1, max || 0);
  return [0, top <= 5 ? Math.ceil(top) + 1 : Math.ceil(top * 1.15)];
}

// One uPlot per chart, kept while its series stay the same (new data only), else rebuilt.
function drawChart(key, series, data, { gaps = false, points = false, format }) {
  const el = $(`chart-${key}`);
  const signature = series.map((s) => `${s.label}:${s.stroke}`).join("|");
  let chart = queuesPage.charts[key];
  if (chart && chart.signature !== signature) {
    chart.plot.destroy();
    chart = null;
  }
  if (chart) {
    chart.plot.setData(data);
  } else {
    const axis = { stroke: "#6b7380", grid: { stroke: "#eef0f3" }, ticks: { stroke: "#e3e6eb" } };
    const plot = new window.uPlot({
      width: chartWidth(el),
      height: CHART_HEIGHT,
      cursor: { points: { size: 6 }, sync: { key: "queues" } }, // one time across the charts
      scales: { x: { time: true }, y: { range: roomAbove } },
      axes: [axis, { ...axis, size: 52, values: (u, ticks) => ticks.map((t) => format(t)) }],
      series: [{}, ...series.map((s) => ({
        label: s.label,
        stroke: s.stroke,
        width: 1.6,
        spanGaps: gaps,
        value: (u, v) => (v === null || v === undefined ? "—" : format(v)),
        ...(points ? { points: { show: true, size: 4, fill: s.stroke } } : {}),
      }))],
    }, data, el);
    queuesPage.charts[key] = { plot, signature };
  }
  el.dataset.points = String(data.slice(1).flat().filter((v) => v !== null).length);
}

document.addEventListener("DOMContentLoaded", () => {
  $("q-minutes").addEventListener("change", () => pollQueues());
  $("q-queue").addEventListener("change", () => {
    renderQueueTable();
    renderCharts();
  });
  window.addEventListener("resize", () => {
    for (const [key, chart] of Object.entries(queuesPage.charts)) {
      chart.plot.setSize({ width: chartWidth($(`chart-${key}`)), height: CHART_HEIGHT });
    }
  });
});
