// Klaxon dashboard: plain JS, no dependencies. Talks to the JSON API with the token (if any)
// from sessionStorage in an Authorization header, and follows /api/v1/events/stream with
// fetch() for the same reason (EventSource cannot send headers; a token in a URL gets logged).
// Every list is paged (limit <= 100): the store may hold far more than a page can show.
"use strict";

const TOKEN_KEY = "klaxon.token";
const PAGE = 100;            // rows per list request
const MAX_ROWS = 300;        // rows kept in the deliveries table (live rows push old ones out)
const CHART_PAGES = 10;      // at most this many pages of the last hour seed the charts
const HOUR_MS = 3600 * 1000;
const MIN_MS = 60 * 1000;
const COLORS = ["#2453d4", "#1b873f", "#c62828", "#b45309", "#7c3aed", "#0e7490", "#be185d", "#4d7c0f"];

const $ = (sel, root = document) => root.querySelector(sel);

/** An element with text content only: nothing from the API is ever parsed as HTML. */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function fmtTime(t) {
  if (!t) return "";
  const d = new Date(t);
  const today = new Date().toDateString() === d.toDateString();
  return today ? d.toLocaleTimeString() : d.toLocaleString();
}

// ---------------------------------------------------------------------------------------------
// API access and the token

class Unauthorized extends Error {}

let loginWaiters = [];

async function api(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(path, {
    method: opts.method || "GET",
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    signal: opts.signal,
  });
  if (res.status === 401) {
    askToken(!!token);
    throw new Unauthorized("unauthorized");
  }
  if (opts.raw) return res;
  const data = await res.json().catch(() => null);
  if (!res.ok) {
    const msg = (data && data.error && data.error.message) || res.status + " " + res.statusText;
    throw new Error(msg);
  }
  return data;
}

/** Shows the token dialog; resolves once a token that the API accepts is stored. */
function askToken(wasWrong) {
  const dlg = $("#login");
  $("#login-error").hidden = !wasWrong;
  if (wasWrong) sessionStorage.removeItem(TOKEN_KEY);
  if (!dlg.open) {
    dlg.showModal();
    $("#token-input").focus();
  }
  return new Promise((resolve) => loginWaiters.push(resolve));
}

async function submitToken(ev) {
  ev.preventDefault();
  const value = $("#token-input").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  try {
    await api("/api/v1/channels");
  } catch (e) {
    return; // askToken() already showed the error
  }
  $("#token-input").value = "";
  $("#login").close();
  $("#logout").hidden = false;
  const waiters = loginWaiters;
  loginWaiters = [];
  waiters.forEach((w) => w());
  if (started) {
    // The token changed under a running page (the server was restarted with another one).
    refreshAll();
    follow();
  } else {
    start();
  }
}

function report(e) {
  if (!(e instanceof Unauthorized)) console.error(e);
}

// ---------------------------------------------------------------------------------------------
// Channel cards

const channels = new Map(); // name -> view (with backlog and dead from the list API)
const testResults = new Map(); // name -> {outcome, text}

async function loadChannels() {
  const data = await api("/api/v1/channels");
  for (const c of data.channels) channels.set(c.name, c);
  renderChannels();
  fillChannelFilter();
}

function fillChannelFilter() {
  const sel = $("#f-channel");
  const have = new Set([...sel.options].map((o) => o.value));
  for (const name of channels.keys()) {
    if (!have.has(name)) sel.append(el("option", { value: name, text: name }));
  }
}

function renderChannels() {
  const root = $("#channels");
  if (channels.size === 0) {
    root.replaceChildren(el("p", { class: "muted", text: "No channels are configured." }));
    return;
  }
  const cards = [];
  for (const c of channels.values()) {
    const fresh = card(c);
    // Counters change with every delivery; the buttons only when their state does. Keeping
    // the same button elements means a click is never lost to a re-render under load.
    const old = root.querySelector(`.card[data-channel="${CSS.escape(c.name)}"]`);
    if (old && old.dataset.controls === fresh.dataset.controls) {
      fresh.querySelector(".actions").replaceWith(old.querySelector(".actions"));
    }
    cards.push(fresh);
  }
  root.replaceChildren(...cards);
  renderLegend();
}

function card(c) {
  const muted = c.muted_until && new Date(c.muted_until) > new Date();
  const health = c.health
    ? `health check: ${c.health.state}${c.health.detail ? " — " + c.health.detail : ""} (${fmtTime(c.health.checked_at)})`
    : "health check: not run yet";
  const result = testResults.get(c.name);
  const toggle = el("input", {
    type: "checkbox", class: "toggle", role: "switch", checked: c.enabled,
    "aria-label": `enable ${c.name}`,
    onchange: (ev) => setChannel(c.name, { enabled: ev.target.checked }, ev.target),
  });
  const controls = JSON.stringify([c.enabled, !!muted, result && result.outcome === "pending"]);
  return el("article", { class: "card", "data-channel": c.name, "data-state": c.state, "data-controls": controls },
    el("div", { class: "card-head" },
      el("span", { class: "name", text: c.name }),
      el("span", { class: "kind", text: c.kind }),
      el("span", { class: "badge " + c.state, text: c.state.replace("_", " ") })),
    el("div", { class: "dest", text: c.destination }),
    el("div", { class: "counters" },
      el("div", {}, el("b", { class: "delivered", text: String(c.delivered) }), el("span", { text: "delivered" })),
      el("div", {}, el("b", { class: "failed", text: String(c.failed) }), el("span", { text: "failed" })),
      el("div", {}, el("b", { class: "backlog", text: String(c.backlog ?? "–") }), el("span", { text: "backlog" }))),
    c.last_error
      ? el("div", { class: "last-error error", text: `last error (${fmtTime(c.last_error_at)}): ${c.last_error}` })
      : el("div", { class: "last-error muted", text: "no errors" }),
    !c.enabled && c.disabled_reason ? el("div", { class: "last-error error", text: "disabled: " + c.disabled_reason }) : null,
    el("div", { class: "health muted", text: health }),
    muted ? el("div", { class: "mute-state", text: "muted until " + fmtTime(c.muted_until) }) : null,
    el("div", { class: "actions" },
      el("label", { class: "switch" }, toggle, el("span", { text: c.enabled ? "enabled" : "disabled" })),
      el("button", {
        type: "button", class: "mute", text: muted ? "Unmute" : "Mute 1 h",
        onclick: (ev) => setChannel(c.name, { muted_until: muted ? null : new Date(Date.now() + HOUR_MS).toISOString() }, ev.target),
      }),
      el("button", { type: "button", class: "test", text: "Send test", disabled: !c.enabled, onclick: (ev) => sendTest(c.name, ev.target) })),
    el("div", { class: "test-result " + (result ? result.outcome : ""), "aria-live": "polite", text: result ? result.text : "" }));
}

async function setChannel(name, change, control) {
  control.disabled = true;
  try {
    const v = await api(`/api/v1/channels/${encodeURIComponent(name)}`, { method: "PATCH", body: change });
    channels.set(name, v);
  } catch (e) {
    report(e);
    testResults.set(name, { outcome: "failed", text: "change failed: " + e.message });
  }
  renderChannels();
}

async function sendTest(name, button) {
  button.disabled = true;
  testResults.set(name, { outcome: "pending", text: "sending…" });
  renderChannels();
  try {
    const r = await api(`/api/v1/channels/${encodeURIComponent(name)}/test`, { method: "POST" });
    const text = r.outcome === "delivered" ? "Test delivered ✓"
      : r.outcome === "failed" ? "Test failed: " + (r.error || "unknown error")
      : "Test still pending" + (r.error ? ": " + r.error : "");
    testResults.set(name, { outcome: r.outcome, text });
  } catch (e) {
    report(e);
    testResults.set(name, { outcome: "failed", text: "Test failed: " + e.message });
  }
  renderChannels();
}

/** A `channel` event: the view without backlog and dead, which we keep from the last load. */
function onChannel(view) {
  const old = channels.get(view.name) || {};
  channels.set(view.name, Object.assign({ backlog: old.backlog, dead: old.dead }, view));
  later("cards", 500, renderChannels);
  later("channels", 5000, () => loadChannels().catch(report));
}

const timers = new Map();
/** Runs `fn` once, `ms` from the first call (calls in between are folded into it). */
function later(key, ms, fn) {
  if (timers.has(key)) return;
  timers.set(key, setTimeout(() => { timers.delete(key); fn(); }, ms));
}

// ---------------------------------------------------------------------------------------------
// Recent deliveries

let cursor = null;        // next page of the list API
let listGen = 0;          // bumps when the filters change: late answers of old lists are dropped

function filters() {
  return {
    status: $("#f-status").value,
    channel: $("#f-channel").value,
    severity: $("#f-severity").value,
    text: $("#f-text").value.trim().toLowerCase(),
  };
}

function listQuery(f, cur) {
  const q = new URLSearchParams({ limit: String(PAGE) });
  if (f.status) q.set("status", f.status);
  if (f.channel) q.set("channel", f.channel);
  if (f.severity) q.set("severity", f.severity);
  if (f.text) q.set("q", f.text);
  if (cur) q.set("cursor", cur);
  return "/api/v1/notifications?" + q;
}

/** Rows of one notification from the list API: one per delivery (matching the filters). */
function rowsOf(n, f) {
  const out = [];
  for (const d of n.deliveries || []) {
    if (f.channel && d.channel !== f.channel) continue;
    if (f.status && d.status !== f.status) continue;
    out.push({
      delivery_id: d.id, notification_id: n.id, at: d.updated_at || n.created_at,
      title: n.title, summary: n.message, severity: n.severity, channel: d.channel,
      status: d.status, attempts: d.attempts, error: d.last_error,
    });
  }
  return out;
}

function matchesText(r, text) {
  if (!text) return true;
  return [r.title, r.summary, r.channel, r.status, r.error, r.notification_id]
    .some((v) => v && String(v).toLowerCase().includes(text));
}

function deliveryRow(r, fresh, text) {
  const tr = el("tr", {
    "data-delivery": r.delivery_id, "data-notification": r.notification_id,
    class: fresh ? "fresh" : null, hidden: !matchesText(r, text),
    onclick: () => openDetail(r.notification_id),
  },
  el("td", { text: fmtTime(r.at) }),
  el("td", { class: "msg" }, r.title ? el("b", { text: r.title + " " }) : null, el("span", { text: r.summary || "" })),
  el("td", { class: "sev " + r.severity, text: r.severity }),
  el("td", { text: r.channel }),
  el("td", { class: "status " + r.status, title: r.error || "", text: r.status }),
  el("td", { class: "tries", text: String(r.attempts ?? "") }));
  tr._row = r;
  return tr;
}

async function loadDeliveries(more) {
  const gen = more ? listGen : ++listGen;
  const f = filters();
  const data = await api(listQuery(f, more ? cursor : null));
  if (gen !== listGen) return;
  const rows = data.items.flatMap((n) => rowsOf(n, f)).map((r) => deliveryRow(r, false, f.text));
  const body = $("#deliveries tbody");
  if (more) body.append(...rows);
  else body.replaceChildren(...rows);
  indexRows();
  cursor = data.next_cursor;
  $("#more").hidden = !cursor;
}

const rowIndex = new Map(); // delivery id -> its <tr> in the table
let incoming = [];          // delivery events not yet shown (shown in batches)

function indexRows() {
  rowIndex.clear();
  for (const tr of $("#deliveries tbody").rows) rowIndex.set(tr.dataset.delivery, tr);
}

/** A `delivery` event: shown with the others of the next quarter second, in one DOM update. */
function onDeliveryRow(ev) {
  incoming.push(ev);
  later("rows", 250, flushRows);
}

function flushRows() {
  const batch = incoming;
  incoming = [];
  const body = $("#deliveries tbody");
  const f = filters();
  const top = document.createDocumentFragment();
  const newest = new Map();
  for (const ev of batch) newest.set(ev.delivery_id, ev); // the last word on each delivery
  for (const ev of [...newest.values()].reverse()) {
    const r = rowFromEvent(ev);
    const existing = rowIndex.get(r.delivery_id);
    if (existing) {
      const tr = deliveryRow(r, true, f.text);
      existing.replaceWith(tr);
      rowIndex.set(r.delivery_id, tr);
      continue;
    }
    if ((f.channel && r.channel !== f.channel) || (f.status && r.status !== f.status)
      || (f.severity && r.severity !== f.severity)) continue;
    const tr = deliveryRow(r, true, f.text);
    rowIndex.set(r.delivery_id, tr);
    top.append(tr);
  }
  body.prepend(top);
  while (body.rows.length > MAX_ROWS) {
    rowIndex.delete(body.lastElementChild.dataset.delivery);
    body.lastElementChild.remove();
  }
}

function rowFromEvent(ev) {
  return {
    delivery_id: ev.delivery_id, notification_id: ev.notification_id, at: ev.at,
    title: ev.title, summary: ev.summary, severity: ev.severity, channel: ev.channel,
    status: ev.status, attempts: ev.attempt, error: ev.error,
  };
}

let textTimer = null;
/** Loaded rows filter at once; the store is searched too (title and message), after typing
 *  pauses, so a match that is not on the loaded pages is found. */
function applyText() {
  const text = filters().text;
  for (const tr of $("#deliveries tbody").rows) tr.hidden = !matchesText(tr._row || {}, text);
  clearTimeout(textTimer);
  textTimer = setTimeout(() => loadDeliveries(false).catch(report), 300);
}

async function openDetail(id) {
  const dlg = $("#detail");
  const body = $("#detail-body");
  body.replaceChildren(el("p", { class: "muted", text: "Loading…" }));
  if (!dlg.open) dlg.showModal();
  try {
    const n = await api(`/api/v1/notifications/${encodeURIComponent(id)}`);
    $("#detail-title").textContent = n.title || "Notification";
    const parts = [
      el("p", { class: "muted", text: `${n.id} · ${n.severity} · from ${n.source || "?"} · accepted ${fmtTime(n.created_at)}` }),
      el("pre", { text: n.message }),
    ];
    for (const d of n.deliveries) {
      parts.push(el("h3", { text: `${d.channel}${d.target ? " → " + d.target : ""}: ` },
        el("span", { class: "status " + d.status, text: d.status })));
      const rows = (d.attempts || []).map((a) => el("tr", { class: "attempt" },
        el("td", { text: String(a.number) }),
        el("td", { text: fmtTime(a.started_at) }),
        el("td", { class: "status " + (a.outcome === "delivered" ? "delivered" : "dead"), text: a.outcome }),
        el("td", { text: a.status_code ? String(a.status_code) : "" }),
        el("td", { text: a.latency_ms + " ms" }),
        el("td", { class: "msg", text: a.error || "" })));
      parts.push(rows.length
        ? el("div", { class: "table-wrap" }, el("table", { class: "attempts" },
          el("thead", {}, el("tr", {}, ...["#", "Started", "Outcome", "HTTP", "Latency", "Error"].map((h) => el("th", { text: h })))),
          el("tbody", {}, ...rows)))
        : el("p", { class: "muted", text: "No attempt yet." }));
    }
    body.replaceChildren(...parts);
  } catch (e) {
    report(e);
    body.replaceChildren(el("p", { class: "error", text: e.message }));
  }
}

// ---------------------------------------------------------------------------------------------
// Dead letters

let deadCursor = null;

async function loadDead(more) {
  const q = new URLSearchParams({ limit: String(PAGE) });
  if (more && deadCursor) q.set("cursor", deadCursor);
  const data = await api("/api/v1/dead-letters?" + q);
  const rows = data.items.map((d) => el("tr", { "data-delivery": d.id },
    el("td", { text: fmtTime(d.updated_at) }),
    el("td", { class: "msg" }, d.notification.title ? el("b", { text: d.notification.title + " " }) : null,
      el("span", { text: d.notification.message })),
    el("td", { text: d.channel }),
    el("td", { text: String(d.attempts) }),
    el("td", { class: "msg error", text: d.last_error || "" }),
    el("td", {}, el("button", { type: "button", class: "retry", text: "Retry", onclick: (ev) => retryDead(d.id, ev.target) }))));
  const body = $("#dead tbody");
  if (more) body.append(...rows);
  else body.replaceChildren(...rows);
  if (!body.rows.length) body.append(el("tr", { class: "empty" }, el("td", { colspan: "6", class: "muted", text: "No dead letters." })));
  deadCursor = data.next_cursor;
  $("#dead-more").hidden = !deadCursor;
  $("#retry-all").disabled = !data.items.length;
}

async function retryDead(id, button) {
  button.disabled = true;
  try {
    await api(`/api/v1/dead-letters/${encodeURIComponent(id)}/retry`, { method: "POST" });
    button.closest("tr").remove();
  } catch (e) {
    report(e);
    button.disabled = false;
    button.textContent = "Retry failed";
  }
  later("dead", 500, () => loadDead(false).catch(report));
}

async function retryAll() {
  if (!confirm("Put every dead delivery back in the queue?")) return;
  try {
    await api("/api/v1/dead-letters/retry?all=true", { method: "POST" });
  } catch (e) {
    report(e);
  }
  loadDead(false).catch(report);
}

// ---------------------------------------------------------------------------------------------
// Charts: per channel, per minute of the last hour, deliveries done and mean accept→delivered
// latency. Seeded from the list API (the newest CHART_PAGES pages of the hour), then live.

const buckets = new Map(); // channel -> Map(minute -> {n, latSum, latN})
const seen = new Map();    // "delivery:status" -> minute counted (a row and its event count once)

function minuteOf(t) { return Math.floor(t / MIN_MS); }

function countDelivery(id, channel, status, at, latencyMs) {
  if (status !== "delivered" && status !== "dead") return;
  if (seen.has(id)) return;
  const m = minuteOf(at);
  seen.set(id, m);
  if (m < minuteOf(Date.now() - HOUR_MS)) return;
  if (!buckets.has(channel)) buckets.set(channel, new Map());
  const b = buckets.get(channel);
  const cell = b.get(m) || { n: 0, latSum: 0, latN: 0 };
  cell.n += 1;
  if (status === "delivered" && latencyMs >= 0) { cell.latSum += latencyMs; cell.latN += 1; }
  b.set(m, cell);
}

async function seedCharts() {
  const since = new Date(Date.now() - HOUR_MS).toISOString();
  let cur = null;
  for (let page = 0; page < CHART_PAGES; page++) {
    const q = new URLSearchParams({ limit: String(PAGE), since });
    if (cur) q.set("cursor", cur);
    const data = await api("/api/v1/notifications?" + q);
    for (const n of data.items) {
      for (const d of n.deliveries || []) {
        const done = d.delivered_at || d.updated_at;
        const lat = d.delivered_at ? new Date(d.delivered_at) - new Date(n.created_at) : -1;
        countDelivery(d.id + ":" + d.status, d.channel, d.status, new Date(done).getTime(), lat);
      }
    }
    cur = data.next_cursor;
    if (!cur) break;
  }
  drawCharts();
}

function colorOf(name) {
  const names = [...new Set([...channels.keys(), ...buckets.keys()])].sort();
  return COLORS[Math.max(0, names.indexOf(name)) % COLORS.length];
}

function renderLegend() {
  const names = [...new Set([...channels.keys(), ...buckets.keys()])].sort();
  $("#legend").replaceChildren(...names.map((n) =>
    el("span", {}, swatch(colorOf(n)), n)));
}

/** A colour square; set through the CSSOM, as the page's CSP allows no inline style attribute. */
function swatch(color) {
  const i = el("i");
  i.style.background = color;
  return i;
}

const SVGNS = "http://www.w3.org/2000/svg";
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/** One line per channel over the last 60 minutes; `value(cell)` or null for a gap. */
function lineChart(target, value, unit) {
  const W = 600, H = 200, L = 44, R = 8, T = 10, B = 22;
  const now = minuteOf(Date.now());
  const first = now - 59;
  const series = [];
  let max = 0;
  for (const [name, b] of buckets) {
    const pts = [];
    for (let m = first; m <= now; m++) {
      const cell = b.get(m);
      const v = cell ? value(cell) : value({ n: 0, latSum: 0, latN: 0 });
      pts.push(v);
      if (v !== null) max = Math.max(max, v);
    }
    series.push([name, pts]);
  }
  max = niceMax(max);
  const x = (i) => L + (i / 59) * (W - L - R);
  const y = (v) => T + (1 - v / max) * (H - T - B);
  const parts = [
    svg("line", { class: "axis", x1: L, y1: y(0), x2: W - R, y2: y(0) }),
    svg("line", { class: "axis", x1: L, y1: y(max), x2: W - R, y2: y(max), "stroke-dasharray": "3 3" }),
    svg("text", { x: L - 4, y: y(max) + 4, "text-anchor": "end" }, String(max)),
    svg("text", { x: L - 4, y: y(0) + 4, "text-anchor": "end" }, "0"),
    svg("text", { x: L, y: H - 6 }, "-60 min"),
    svg("text", { x: W - R, y: H - 6, "text-anchor": "end" }, "now"),
    svg("text", { x: (L + W) / 2, y: H - 6, "text-anchor": "middle" }, unit),
  ];
  for (const [name, pts] of series) {
    // Gaps (no value) split the line.
    let run = [];
    const flush = () => {
      if (run.length === 1) parts.push(svg("circle", { cx: run[0][0], cy: run[0][1], r: 2.5, fill: colorOf(name), "data-channel": name }));
      else if (run.length) parts.push(svg("polyline", { points: run.map((p) => p.join(",")).join(" "), stroke: colorOf(name), "data-channel": name }));
      run = [];
    };
    pts.forEach((v, i) => { if (v === null) flush(); else run.push([x(i).toFixed(1), y(v).toFixed(1)]); });
    flush();
  }
  target.replaceChildren(...parts);
}

/** Forgets what fell out of the hour, so a page left open for days stays small. */
function pruneCharts() {
  const oldest = minuteOf(Date.now() - HOUR_MS);
  for (const [id, m] of seen) if (m < oldest) seen.delete(id);
  for (const b of buckets.values()) for (const m of b.keys()) if (m < oldest) b.delete(m);
}

function drawCharts() {
  lineChart($("#chart-volume"), (c) => c.n, "deliveries / min");
  lineChart($("#chart-latency"), (c) => (c.latN ? Math.round(c.latSum / c.latN) : null), "ms");
  renderLegend();
}

// ---------------------------------------------------------------------------------------------
// The live stream, read with fetch so the token travels in a header.

let streamAbort = null;
let retryDelay = 1000;

function setLive(on) {
  const s = $("#live");
  s.textContent = on ? "live" : "offline";
  s.className = "live " + (on ? "on" : "off");
}

async function follow() {
  if (streamAbort) streamAbort.abort();
  const ctl = new AbortController();
  streamAbort = ctl;
  try {
    const res = await api("/api/v1/events/stream", { raw: true, signal: ctl.signal, headers: { Accept: "text/event-stream" } });
    if (!res.ok || !res.body) throw new Error("stream answered " + res.status);
    setLive(true);
    retryDelay = 1000;
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, end);
        buf = buf.slice(end + 2);
        let name = "message";
        let data = "";
        for (const line of block.split("\n")) {
          if (line.startsWith("event:")) name = line.slice(6).trim();
          else if (line.startsWith("data:")) data += line.slice(5).replace(/^ /, "");
        }
        if (data) dispatch(name, JSON.parse(data));
      }
    }
  } catch (e) {
    if (ctl.signal.aborted) return;
    if (e instanceof Unauthorized) { setLive(false); return; }
    report(e);
  }
  if (ctl.signal.aborted) return;
  setLive(false);
  // The server went away or restarted: come back, and catch up on what was missed.
  setTimeout(() => { if (streamAbort === ctl) { refreshAll(); follow(); } }, retryDelay);
  retryDelay = Math.min(retryDelay * 2, 15000);
}

function dispatch(name, data) {
  switch (name) {
    case "delivery":
      onDeliveryRow(data);
      countDelivery(data.delivery_id + ":" + data.status, data.channel, data.status, new Date(data.at).getTime(),
        data.status === "delivered" ? data.accept_to_outcome_ms : -1);
      later("charts", 1000, drawCharts);
      // The dead-letter list is a query of its own: at most every 5 s, however busy.
      if (data.status === "dead" || data.attempt > 1) later("dead", 5000, () => loadDead(false).catch(report));
      break;
    case "channel":
      onChannel(data);
      break;
    case "lagged":
      // We missed events: reload what they would have told us.
      refreshAll();
      break;
    case "hello":
      if (data.version) $("#version").textContent = "v" + data.version;
      break;
  }
}

// ---------------------------------------------------------------------------------------------

function refreshAll() {
  loadChannels().catch(report);
  loadDeliveries(false).catch(report);
  loadDead(false).catch(report);
}

let started = false;
async function start() {
  if (started) return;
  try {
    await loadChannels();
  } catch (e) {
    report(e);
    return; // asked for the token; submitToken() calls start() again
  }
  started = true;
  $("#logout").hidden = !sessionStorage.getItem(TOKEN_KEY);
  loadDeliveries(false).catch(report);
  loadDead(false).catch(report);
  seedCharts().catch(report);
  follow();
  // Minutes move on even when nothing happens; counters like backlog come from the store.
  setInterval(() => { pruneCharts(); drawCharts(); }, 30000);
  setInterval(() => loadChannels().catch(report), 15000);
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", submitToken);
  $("#login").addEventListener("cancel", (ev) => ev.preventDefault());
  $("#logout").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); location.reload(); });
  for (const id of ["#f-status", "#f-channel", "#f-severity"]) $(id).addEventListener("change", () => loadDeliveries(false).catch(report));
  $("#f-text").addEventListener("input", applyText);
  $("#filters").addEventListener("submit", (ev) => ev.preventDefault());
  $("#more").addEventListener("click", () => loadDeliveries(true).catch(report));
  $("#dead-more").addEventListener("click", () => loadDead(true).catch(report));
  $("#retry-all").addEventListener("click", retryAll);
  $("#detail-close").addEventListener("click", () => $("#detail").close());
  start();
});
