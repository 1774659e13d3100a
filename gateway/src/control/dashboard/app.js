// The Portcullis dashboard: polls /dashboard/state (APIs, targets, cluster,
// reloads) and /metrics (Prometheus text) every two seconds; rates and
// percentiles come from the difference between two polls, as Prometheus's
// rate() and histogram_quantile() would compute them. No dependencies.
"use strict";

const POLL_MS = 2000;
const HISTORY = 90; // points per sparkline: three minutes
const history = new Map(); // key -> [numbers]
let previous = null; // { at, metrics }
let polls = 0;

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const $ = (id) => document.getElementById(id);

// name -> [{ labels, value }]
function parseMetrics(text) {
  const out = new Map();
  for (const line of text.split("\n")) {
    if (!line || line[0] === "#") continue;
    const m = /^([a-zA-Z_:][\w:]*)(\{(.*)\})? (\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2].replace(/\\(.)/g, "$1");
    if (!out.has(m[1])) out.set(m[1], []);
    out.get(m[1]).push({ labels, value: Number(m[4]) });
  }
  return out;
}

const key = (labels, drop = []) =>
  Object.keys(labels).filter((k) => !drop.includes(k)).sort().map((k) => `${k}=${labels[k]}`).join(",");
// `want`: labels a series must have, or a test of its labels.
const matches = (labels, want) =>
  typeof want === "function" ? want(labels) : Object.entries(want).every(([k, v]) => labels[k] === v);

function sum(metrics, name, want = {}) {
  return (metrics.get(name) || []).filter((s) => matches(s.labels, want)).reduce((a, s) => a + s.value, 0);
}

// Increase of a counter (summed over the series `want` picks) since the last poll, per second.
function rate(now, name, want = {}) {
  if (!previous) return null;
  const dt = (now.at - previous.at) / 1000;
  const d = sum(now.metrics, name, want) - sum(previous.metrics, name, want);
  return dt > 0 ? Math.max(0, d) / dt : null;
}

// The q-quantile (seconds) of a histogram's observations since the last poll.
function quantile(now, name, want, q) {
  if (!previous) return null;
  const buckets = new Map();
  for (const [m, sign] of [[now.metrics, 1], [previous.metrics, -1]]) {
    for (const s of m.get(`${name}_bucket`) || []) {
      if (!matches(s.labels, want)) continue;
      const le = s.labels.le === "+Inf" ? Infinity : Number(s.labels.le);
      buckets.set(le, (buckets.get(le) || 0) + sign * s.value);
    }
  }
  const les = [...buckets.keys()].sort((a, b) => a - b);
  const total = buckets.get(Infinity) || 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0, below = 0;
  for (const le of les) {
    const count = buckets.get(le);
    if (count >= rank) {
      if (le === Infinity) return lower;
      return lower + (le - lower) * ((rank - below) / Math.max(count - below, 1e-9));
    }
    lower = le; below = count;
  }
  return lower;
}

function remember(k, v) {
  const points = history.get(k) || [];
  points.push(v ?? 0);
  if (points.length > HISTORY) points.shift();
  history.set(k, points);
  return points;
}

function spark(points, bad = false) {
  const w = 90, h = 20, max = Math.max(...points, 1e-9);
  // The points so far fill the width; once HISTORY are kept, the line scrolls.
  const step = w / Math.max(points.length - 1, 1);
  const xy = points.map((v, i) => `${(i * step).toFixed(1)},${(h - 1 - (v / max) * (h - 2)).toFixed(1)}`);
  return `<svg class="spark${bad ? " bad" : ""}" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}"><polyline points="${xy.join(" ")}"/></svg>`;
}

const num = (v, digits = 1) => (v == null ? "–" : v.toFixed(digits));
const ms = (s) => (s == null ? "–" : s < 0.001 ? `${(s * 1e6).toFixed(0)} µs` : s < 1 ? `${(s * 1e3).toFixed(1)} ms` : `${s.toFixed(2)} s`);
const pct = (v) => (v == null ? "–" : `${(v * 100).toFixed(1)}%`);
const short = (digest) => esc(String(digest || "").replace(/^sha256:/, "").slice(0, 12));

function tile(label, value, note = "") {
  return `<div class="tile"><small>${esc(label)}</small><b>${value}</b><small>${note}</small></div>`;
}

function render(state, now) {
  const m = now.metrics;
  $("node").textContent = `node ${state.node} · v${state.version}`;
  $("config").textContent = `configuration ${String(state.config.hash).slice(0, 12)} loaded ${state.config.loaded_at}`;

  const total = rate(now, "portcullis_http_requests_total");
  const errors = rate(now, "portcullis_http_request_failures_total");
  $("totals").innerHTML = [
    tile("requests/s", `${num(total)} ${spark(remember("total", total))}`),
    tile("failures", pct(total ? errors / total : null), "answered with an error, of all"),
    tile("p50 / p99", `${ms(quantile(now, "portcullis_http_request_duration_seconds", {}, 0.5))} / ${ms(quantile(now, "portcullis_http_request_duration_seconds", {}, 0.99))}`),
    tile("in flight", num(sum(m, "portcullis_http_requests_in_flight"), 0)),
    tile("plugin instances", `${num(sum(m, "portcullis_plugin_instances_in_use"), 0)} <small>of ${num(sum(m, "portcullis_plugin_instance_pool_size"), 0)}</small>`),
    tile("reloads", num(sum(m, "portcullis_config_reloads_total"), 0), `${num(sum(m, "portcullis_config_reloads_total", { result: "error" }), 0)} failed`),
  ].join("");

  $("apis").tBodies[0].innerHTML = state.apis.map((api) => {
    const want = { api: api.id };
    const rps = rate(now, "portcullis_http_requests_total", want);
    const fivexx = rps ? rate(now, "portcullis_http_requests_total", (l) => l.api === api.id && l.code.startsWith("5")) / rps : null;
    const plugins = (api.components || []).map((c) => `<code>${esc(c.plugin)}</code> <span class="muted">${short(c.digest)} · ${esc(c.contract)}${c.reuse > 1 ? ` · reuse ${esc(c.reuse)}` : ""}</span>`).join("<br>");
    return `<tr data-api="${esc(api.id)}"><td><b>${esc(api.id)}</b></td><td><code>${esc(api.listen_path)}</code></td><td>${esc(api.auth.type)}</td>` +
      `<td>${num(rps)} ${spark(remember(`api:${api.id}`, rps))}</td><td>${pct(fivexx)} ${spark(remember(`5xx:${api.id}`, fivexx), true)}</td>` +
      `<td>${ms(quantile(now, "portcullis_http_request_duration_seconds", want, 0.5))}</td><td>${ms(quantile(now, "portcullis_http_request_duration_seconds", want, 0.99))}</td>` +
      `<td>${num(sum(m, "portcullis_rate_limited_total", want), 0)}</td><td class="wrap">${plugins || '<span class="muted">none</span>'}</td></tr>`;
  }).join("");

  const rows = [];
  for (const api of state.upstreams) {
    for (const group of api.upstreams) {
      for (const t of group.targets) {
        const want = { api: api.api, upstream: group.name, target: t.url };
        const errs = sum(m, "portcullis_upstream_errors_total", want);
        rows.push(`<tr data-target="${esc(t.url)}" data-state="${esc(t.state)}"><td>${esc(api.api)}</td><td>${esc(group.name)}</td><td><code>${esc(t.url)}</code></td>` +
          `<td><span class="badge ${esc(t.state)}">${esc(t.state)}</span> <span class="muted">${esc(t.for_seconds)} s</span></td><td class="wrap">${esc(t.reason || "")}</td>` +
          `<td>${esc(t.in_flight)}</td><td>${num(rate(now, "portcullis_upstream_requests_total", want))}</td>` +
          `<td>${ms(quantile(now, "portcullis_upstream_request_duration_seconds", want, 0.5))}</td><td>${num(errs, 0)}</td></tr>`);
      }
    }
  }
  $("targets").tBodies[0].innerHTML = rows.join("") || '<tr><td colspan="9" class="muted">no targets</td></tr>';

  const components = new Map();
  for (const api of state.apis) for (const c of api.components || []) components.set(`${api.id}|${c.plugin}`, c);
  $("plugins").tBodies[0].innerHTML = (m.get("portcullis_plugin_calls_total") || []).map((s) => {
    const want = { api: s.labels.api, plugin: s.labels.plugin };
    const failures = (m.get("portcullis_plugin_failures_total") || []).filter((f) => matches(f.labels, want))
      .map((f) => `${esc(f.labels.reason)} ${num(f.value, 0)}`).join(", ");
    const outbound = (m.get("portcullis_plugin_outbound_calls_total") || []).filter((f) => matches(f.labels, want))
      .map((f) => `${esc(f.labels.result)} ${num(f.value, 0)}`).join(", ");
    const c = components.get(`${s.labels.api}|${s.labels.plugin}`);
    const cps = rate(now, "portcullis_plugin_calls_total", want);
    return `<tr data-plugin="${esc(s.labels.plugin)}"><td>${esc(s.labels.api)}</td><td><code>${esc(s.labels.plugin)}</code></td><td>${num(cps)} ${spark(remember(`plugin:${key(want)}`, cps))}</td>` +
      `<td>${ms(quantile(now, "portcullis_plugin_call_duration_seconds", want, 0.5))}</td><td>${ms(quantile(now, "portcullis_plugin_call_duration_seconds", want, 0.99))}</td>` +
      `<td class="wrap">${failures || '<span class="muted">none</span>'}</td><td class="wrap">${outbound || '<span class="muted">none</span>'}</td>` +
      `<td class="muted">${c ? `${short(c.digest)} · ${esc(c.contract)}` : ""}</td></tr>`;
  }).join("") || '<tr><td colspan="8" class="muted">no plugin calls yet</td></tr>';

  const nodes = Array.isArray(state.cluster) ? state.cluster : [];
  $("cluster").tBodies[0].innerHTML = nodes.map((n) =>
    `<tr data-node="${esc(n.id)}"><td>${esc(n.id)}${n.id === state.node ? ' <span class="muted">(this one)</span>' : ""}</td>` +
    `<td><code>${esc(String(n.config_hash).slice(0, 12))}</code>${n.config_hash === state.config.hash ? "" : ' <span class="badge error">differs</span>'}</td>` +
    `<td>${n.last_reload ? `${esc(n.last_reload.at)} ${n.last_reload.ok ? "ok" : "failed"}` : '<span class="muted">none</span>'}</td></tr>`).join("") ||
    `<tr><td colspan="3" class="muted">${esc(state.cluster?.error || "no nodes")}</td></tr>`;

  $("reloads").tBodies[0].innerHTML = state.reloads.slice().reverse().map((r) =>
    `<tr><td>${esc(r.at)}</td><td>${esc(r.trigger)}</td><td><span class="badge ${r.ok ? "ok" : "error"}">${r.ok ? "ok" : "failed"}</span> ` +
    `<span class="wrap">${esc(r.error || "")}${r.restart_required?.length ? ` restart needed for ${esc(r.restart_required.join(", "))}` : ""}</span></td></tr>`).join("") ||
    '<tr><td colspan="3" class="muted">none since start</td></tr>';
}

// The origin without credentials: a page opened at an address that carries
// Basic credentials may not fetch URLs that carry them; the browser sends the remembered
// Basic credentials itself.
const at = (path) => new URL(path, location.origin);

async function poll() {
  const updated = $("updated");
  try {
    const [state, text] = await Promise.all([
      fetch(at("/dashboard/state"), { cache: "no-store" }).then((r) => (r.ok ? r.json() : Promise.reject(new Error(`state: ${r.status}`)))),
      fetch(at("/metrics"), { cache: "no-store" }).then((r) => (r.ok ? r.text() : Promise.reject(new Error(`metrics: ${r.status}`)))),
    ]);
    const now = { at: Date.now(), metrics: parseMetrics(text) };
    render(state, now);
    previous = now;
    polls += 1;
    updated.dataset.polls = String(polls);
    updated.className = "";
    updated.textContent = `updated ${new Date(now.at).toLocaleTimeString()}`;
  } catch (e) {
    updated.className = "stale";
    updated.textContent = `not updated: ${e.message}`;
  }
  setTimeout(poll, POLL_MS);
}

poll();
