// Perch's live page: plots of every series from the live stream (/api/v1/stream), model scores
// against their threshold, the alerts, and module health (/api/v1/modules, polled). Plain
// JavaScript and <canvas>; nothing is fetched from anywhere but this device.
"use strict";

const COLORS = ["#2563eb", "#0d9488", "#7c3aed", "#db2777", "#ea580c", "#4d7c0f"];
const SCORE = "#2563eb", SMOOTHED = "#f59e0b", THRESHOLD = "#dc2626";
const KEEP_MS = 15 * 60 * 1000;  // the longest window the page offers
const MAX_POINTS = 20000;        // per line, whatever the rate
const MAX_ALERTS = 100;
const MODULES_EVERY_MS = 3000;
const REDRAW_EVERY_MS = 250;

const $ = (id) => document.getElementById(id);

// The token: ?access_token=... in the page's address, else the one given in this tab before.
const token = (() => {
  const fromURL = new URLSearchParams(location.search).get("access_token");
  if (fromURL) sessionStorage.setItem("perch-token", fromURL);
  return fromURL || sessionStorage.getItem("perch-token") || "";
})();

// api fetches an API path as JSON, with the token. A 401 shows the token form.
async function api(path) {
  const headers = token ? { Authorization: "Bearer " + token } : {};
  const resp = await fetch(path, { headers, cache: "no-store" });
  if (resp.status === 401) {
    $("login").hidden = false;
    throw new Error("unauthorized");
  }
  if (!resp.ok) throw new Error(path + ": " + resp.status);
  return resp.json();
}

$("login").addEventListener("submit", (e) => {
  e.preventDefault();
  const u = new URL(location.href);
  u.searchParams.set("access_token", $("token").value);
  location.replace(u);
});

// clock maps record times (the device's clock) onto this browser's: the smallest delay seen
// from a record's time to its arrival is taken as the skew between the clocks.
const clock = {
  skew: Infinity,
  saw(timeMs) { this.skew = Math.min(this.skew, Date.now() - timeMs); },
  now() { return Date.now() - (isFinite(this.skew) ? this.skew : 0); },
};

// The plots' time window in seconds: ?window=60 in the page's address picks one of the choices.
const startWindow = new URLSearchParams(location.search).get("window");
if ([...$("window").options].some((o) => o.value === startWindow)) $("window").value = startWindow;

function windowMs() { return Number($("window").value) * 1000; }

// Plot is one card with a canvas: lines of [time ms, value] points, an optional threshold, and
// alert marks (times at which an alert was raised or cleared).
class Plot {
  constructor(parent, key, title, from) {
    this.key = key;
    this.lines = new Map(); // name -> {color, points}
    this.threshold = null;
    this.marks = [];
    this.fig = document.createElement("figure");
    this.fig.className = "plot";
    this.fig.dataset.key = key;
    this.fig.dataset.points = "0";
    const cap = document.createElement("figcaption");
    cap.append(text("span", title), text("span", from, "from"));
    this.last = text("span", "", "last");
    cap.append(this.last);
    this.canvas = document.createElement("canvas");
    this.fig.append(cap, this.canvas);
    const empty = parent.querySelector(".empty");
    if (empty) empty.remove();
    // Cards stay in key order, so a reload shows them where they were.
    const after = [...parent.children].find((c) => c.dataset.key > key);
    parent.insertBefore(this.fig, after || null);
  }

  add(name, color, t, v) {
    if (v === null || !isFinite(v)) return;
    let line = this.lines.get(name);
    if (!line) this.lines.set(name, (line = { color, points: [] }));
    line.points.push([t, v]);
    if (line.points.length > MAX_POINTS) line.points.splice(0, line.points.length - MAX_POINTS);
    this.fig.dataset.points = String(Number(this.fig.dataset.points) + 1);
  }

  mark(t) { this.marks.push(t); }

  trim(oldest) {
    for (const line of this.lines.values()) {
      let i = 0;
      while (i < line.points.length && line.points[i][0] < oldest) i++;
      if (i > 0) line.points.splice(0, i);
    }
    this.marks = this.marks.filter((t) => t >= oldest);
  }

  draw(now, span) {
    const c = this.canvas, dpr = window.devicePixelRatio || 1;
    const w = Math.round(c.clientWidth * dpr), h = Math.round(c.clientHeight * dpr);
    if (w === 0 || h === 0) return;
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    const W = w / dpr, H = h / dpr;
    g.clearRect(0, 0, W, H);
    const left = 48, right = 6, top = 6, bottom = 18;
    const t0 = now - span;

    // The value range of what is visible, with the threshold in view.
    let lo = Infinity, hi = -Infinity;
    for (const line of this.lines.values()) {
      for (const [t, v] of line.points) {
        if (t >= t0) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      }
    }
    if (this.threshold !== null) { lo = Math.min(lo, this.threshold); hi = Math.max(hi, this.threshold); }
    if (!isFinite(lo)) return;
    // At least 0.1 % of the values' size: a steady sensor's last digits are noise, not news.
    const least = Math.max(Math.abs(lo), Math.abs(hi)) * 1e-3 || 1;
    if (hi - lo < least) { const mid = (hi + lo) / 2; lo = mid - least / 2; hi = mid + least / 2; }
    const pad = (hi - lo) * 0.08;
    lo -= pad; hi += pad;
    const x = (t) => left + ((t - t0) / span) * (W - left - right);
    const y = (v) => top + (1 - (v - lo) / (hi - lo)) * (H - top - bottom);
    const crisp = (p) => Math.round(p) + 0.5; // a 1-pixel line on a pixel, not across two

    // Grid and labels.
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#6b7280";
    g.strokeStyle = "#e5e7eb";
    g.lineWidth = 1;
    g.textBaseline = "middle";
    g.textAlign = "right";
    const yt = ticks(lo, hi, 4);
    for (const v of yt.values) {
      g.beginPath(); g.moveTo(left, crisp(y(v))); g.lineTo(W - right, crisp(y(v))); g.stroke();
      g.fillText(v.toFixed(yt.decimals), left - 4, Math.max(y(v), top + 5));
    }
    g.textBaseline = "alphabetic";
    g.textAlign = "center";
    const step = span / 5;
    for (let i = 0; i <= 5; i++) {
      const t = t0 + i * step;
      g.fillText(i === 5 ? "now" : "-" + fmtSpan(span - i * step), Math.min(x(t), W - 14), H - 4);
    }

    // Alert marks, the threshold, then the lines.
    g.strokeStyle = "rgba(220, 38, 38, 0.35)";
    for (const t of this.marks) {
      g.beginPath(); g.moveTo(crisp(x(t)), top); g.lineTo(crisp(x(t)), H - bottom); g.stroke();
    }
    if (this.threshold !== null) {
      const ty = crisp(y(this.threshold));
      g.strokeStyle = THRESHOLD;
      g.setLineDash([5, 4]);
      g.beginPath(); g.moveTo(left, ty); g.lineTo(W - right, ty); g.stroke();
      g.setLineDash([]);
    }
    g.lineWidth = 2;
    g.lineJoin = "round";
    for (const line of this.lines.values()) {
      g.strokeStyle = line.color;
      g.beginPath();
      let started = false;
      for (const [t, v] of line.points) {
        if (t < t0 - step) continue;
        if (started) g.lineTo(x(t), y(v)); else { g.moveTo(x(t), y(v)); started = true; }
      }
      g.stroke();
    }
  }
}

// plots by key: "r|module|series|field" for readings, "s|module|series" for scores.
const plots = new Map();

function plot(parent, key, title, from) {
  let p = plots.get(key);
  if (!p) plots.set(key, (p = new Plot(parent, key, title, from)));
  return p;
}

function onReading(rec) {
  clock.saw(rec.time_ms);
  let i = 0;
  for (const [field, v] of Object.entries(rec.fields)) {
    const p = plot($("series"), `r|${rec.module}|${rec.series}|${field}`, `${rec.series} · ${field}`, rec.module);
    p.add(field, COLORS[i++ % COLORS.length], rec.time_ms, v);
    p.last.textContent = fmt(v);
  }
}

function onScore(rec) {
  clock.saw(rec.time_ms);
  const p = plot($("scores"), `s|${rec.module}|${rec.series}`, `${rec.series} · score`, rec.module);
  const f = rec.fields;
  if ("score" in f) p.add("score", SCORE, rec.time_ms, f.score);
  if ("smoothed" in f) p.add("smoothed", SMOOTHED, rec.time_ms, f.smoothed);
  if ("threshold" in f && f.threshold !== null) p.threshold = f.threshold;
  p.last.textContent = fmt("smoothed" in f ? f.smoothed : f.score);
}

// onAlert lists an alert (from the stream, or the recorder at start) and marks it on the plot
// of the field it judged.
function onAlert(a, live) {
  const list = $("alerts");
  const empty = list.querySelector(".empty");
  if (empty) empty.remove();
  const tags = a.tags || {};
  const state = tags.state || "";
  const li = document.createElement("li");
  li.className = state;
  const when = new Date(a.time_ms ?? Date.parse(a.time));
  li.append(text("time", when.toLocaleTimeString()),
    text("strong", `${state || "alert"} ${a.severity || tags.severity || ""} `),
    text("span", `${tags.source || a.source}/${a.series}: ${a.message || tags.message || ""}`));
  if (live) list.prepend(li); else list.append(li);
  while (list.children.length > MAX_ALERTS) list.lastChild.remove();
  if (!live) return;
  for (const p of plots.values()) {
    if (p.key.endsWith(`|${a.series}|${tags.field}`) || p.key.endsWith(`|${a.series}`)) {
      p.mark(a.time_ms);
      if (a.fields && typeof a.fields.threshold === "number" && p.key.startsWith("r|")) p.threshold = a.fields.threshold;
    }
  }
}

function onHealth(doc) {
  // The stream tells health changes at once; the table's counters come from the poll.
  for (const m of doc.modules) {
    const cell = document.querySelector(`#modules tr[data-name="${CSS.escape(m.name)}"] td.health`);
    if (cell) { cell.textContent = m.health; cell.className = "health " + m.health; }
  }
}

function connect() {
  let url = "api/v1/stream?kinds=reading,score,alert,health";
  if (token) url += "&access_token=" + encodeURIComponent(token);
  const es = new EventSource(url);
  const conn = $("conn");
  let dropped = 0;
  es.onopen = () => { conn.textContent = "live"; conn.className = "conn live"; };
  es.onerror = () => {
    conn.textContent = "reconnecting…"; conn.className = "conn down";
    api("api/v1/status").catch(() => {}); // shows the token form on a 401
  };
  const on = (name, fn) => es.addEventListener(name, (e) => fn(JSON.parse(e.data)));
  on("reading", onReading);
  on("score", onScore);
  on("alert", (a) => onAlert(a, true));
  on("health", onHealth);
  on("dropped", (d) => {
    dropped += d.dropped;
    const el = $("dropped");
    el.hidden = false;
    el.textContent = `${dropped} events dropped (this page fell behind)`;
  });
}

async function pollModules() {
  try {
    const doc = await api("api/v1/modules");
    const body = document.querySelector("#modules tbody");
    body.replaceChildren(...doc.modules.map((m) => {
      const faults = Object.values(m.faults || {}).reduce((a, b) => a + b, 0);
      const health = m.quarantined ? "quarantined" : m.restarts > 0 ? "restarted" : "ok";
      const tr = document.createElement("tr");
      tr.dataset.name = m.name;
      tr.append(text("td", m.name), text("td", m.kind), text("td", health, "health " + health),
        text("td", m.records_in), text("td", m.records_out),
        text("td", faults ? `${m.restarts} (${faults} faults)` : m.restarts),
        text("td", `${m.queue_depth}/${m.queue_cap}`));
      return tr;
    }));
  } catch (e) {
    // Shown by the connection state and the token form; try again at the next poll.
  }
}

async function start() {
  try {
    const st = await api("api/v1/status");
    $("where").textContent = `${st.site} / ${st.device}`;
    document.title = `Perch ${st.site}/${st.device}`;
    const recent = await api("api/v1/alerts?limit=20");
    for (const a of recent.alerts) onAlert(a, false);
  } catch (e) {
    // The stream and the poll below still run; a 401 has shown the token form.
  }
  connect();
  pollModules();
  setInterval(pollModules, MODULES_EVERY_MS);
  setInterval(() => {
    if (document.hidden) return;
    const now = clock.now(), span = windowMs();
    for (const p of plots.values()) {
      p.trim(now - KEEP_MS);
      p.draw(now, span);
    }
  }, REDRAW_EVERY_MS);
}

// Helpers.

function text(tag, s, cls) {
  const el = document.createElement(tag);
  el.textContent = s;
  if (cls) el.className = cls;
  return el;
}

function fmt(v) {
  if (v === null || v === undefined || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e6 || a < 1e-3)) return v.toExponential(2);
  return Number(v.toPrecision(a >= 1000 ? 6 : 4)).toString();
}

function fmtSpan(ms) {
  const s = Math.round(ms / 1000);
  return s >= 60 && s % 60 === 0 ? `${s / 60}m` : `${s}s`;
}

// ticks returns about n round values between lo and hi, and the decimals that tell them apart.
function ticks(lo, hi, n) {
  const raw = (hi - lo) / n, mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const values = [];
  for (let i = Math.ceil(lo / step); i * step <= hi; i++) values.push(i * step);
  return { values, decimals: Math.max(0, -Math.floor(Math.log10(step))) };
}

start();
