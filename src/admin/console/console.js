// payedge operations console. No build step, nothing inline (the page's Content-Security-Policy
// allows scripts and connections from this origin only). Everything shown comes from the admin
// endpoints, with the operator's token as a Bearer header, and from the notification hub.
"use strict";

const TOKEN_KEY = "payedge.adminToken";
const COLORS = ["#1a56db", "#c2410c", "#047857", "#7e22ce", "#b91c1c", "#0e7490", "#a16207", "#be185d"];
const $ = (selector) => document.querySelector(selector);

let token = sessionStorage.getItem(TOKEN_KEY);
let timers = [];
let hub = null;
let joined = null;
let config = null;
let providersAt = 0;

// An element with text children only: nothing from the server is ever parsed as HTML.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("data-")) node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children.flat()) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

class Refused extends Error {}

// GET an admin endpoint as JSON; a 401 or 403 signs out with the server's reason.
async function api(path) {
  const response = await fetch(path, { headers: { Authorization: `Bearer ${token}` }, cache: "no-store" });
  if (response.status === 401 || response.status === 403) {
    let body = {};
    try { body = await response.json(); } catch { /* not JSON */ }
    const reason = response.status === 403
      ? "This token is valid but does not hold the admin role: the console is for operators."
      : `This token is not accepted (${body.error?.message || body.message || "invalid or expired"}).`;
    throw new Refused(reason);
  }
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

function showSignIn(message) {
  for (const t of timers) clearInterval(t);
  timers = [];
  if (hub) { hub.stop(); hub = null; }
  joined = null;
  token = null;
  sessionStorage.removeItem(TOKEN_KEY);
  $("#console").hidden = true;
  $("#sign-out").hidden = true;
  $("#sign-in").hidden = false;
  $("#config-summary").textContent = "";
  $("#sign-in-error").textContent = message || "";
}

function failed(error) {
  if (error instanceof Refused) showSignIn(error.message);
  else console.warn(error);
}

async function signIn(candidate) {
  token = candidate.trim();
  try {
    config = await api("/admin/config");
  } catch (error) {
    showSignIn(error instanceof Refused ? error.message : `Cannot reach payedge: ${error.message}`);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  $("#sign-in").hidden = true;
  $("#sign-in-error").textContent = "";
  $("#console").hidden = false;
  $("#sign-out").hidden = false;
  renderConfig(config);
  startFeed(config);
  const every = (ms, work) => { work(); timers.push(setInterval(work, ms)); };
  every(1000, () => api("/admin/providers").then(renderProviders).catch(failed));
  every(2000, () => api("/admin/traffic").then(renderTraffic).catch(failed));
  timers.push(setInterval(() => api("/admin/config").then(renderConfig).catch(failed), 5000));
  timers.push(setInterval(() => {
    if (providersAt) $("#providers-age").textContent = `updated ${Math.round((Date.now() - providersAt) / 1000)} s ago`;
  }, 1000));
}

// Configuration: the file's hash and the last reload.
function renderConfig(c) {
  config = c;
  const reload = c.last_reload
    ? (c.last_reload_error ? `failed at ${c.last_reload}: ${c.last_reload_error}` : `applied at ${c.last_reload}`)
    : "none since start";
  const rows = [
    ["File", c.file], ["SHA-256", c.sha256], ["Generation", c.generation], ["Loaded at", c.loaded_at],
    ["Last reload", reload], ["Tenants", (c.tenants || []).join(", ")],
  ];
  $("#config").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-key": k }, v ?? "")]));
  $("#config dd[data-key='Last reload']").className = c.last_reload_error ? "error" : "";
  $("#config-summary").textContent = `config ${String(c.sha256).slice(0, 12)} · generation ${c.generation}`;
  const select = $("#feed-tenant");
  const tenants = c.tenants || [];
  if (select.options.length !== tenants.length || tenants.some((t, i) => select.options[i].value !== t)) {
    const chosen = select.value;
    select.replaceChildren(...tenants.map((t) => el("option", { value: t }, t)));
    if (tenants.includes(chosen)) select.value = chosen;
  }
}

// The pool's states (GET /admin/providers), as an operator reads them.
const STATES = {
  admitted: ["healthy", "ok"], probing: ["probing after ejection", "warn"], ejected: ["ejected", "bad"],
  unhealthy: ["failing health checks", "warn"], unresolved: ["address not resolved", "warn"],
};

const ms = (value) => (value === null || value === undefined ? "–" : `${value} ms`);
const seconds = (millis) => `${(millis / 1000).toFixed(1)} s`;

// Providers: one table per pool, refreshed every second.
function renderProviders(body) {
  providersAt = Date.now();
  $("#providers-age").textContent = "updated just now";
  const headers = ["Provider", "State", "Ejection ends in", "Effective weight", "Weight", "Score",
    "Cost", "Success rate", "Latency", "Failures in a row", "Ejections", "Address"];
  const numeric = new Set(["Effective weight", "Weight", "Score", "Success rate", "Latency", "Failures in a row", "Ejections"]);
  const tables = body.pools.map((pool) => el("table", { "data-pool": pool.name },
    el("caption", {}, `Pool ${pool.name}`),
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { class: numeric.has(h) ? "num" : "" }, h)))),
    el("tbody", {}, pool.providers.map((p) => {
      const out = p.state !== "admitted";
      const [label, tone] = STATES[p.state] || [p.state, "warn"];
      const success = Number(p.success_rate);
      return el("tr", { "data-provider": `${pool.name}/${p.name}`, "data-state": p.state, class: out ? "out" : "" },
        el("td", {}, p.name),
        el("td", {}, el("span", { class: `state state-${tone}` }, label)),
        el("td", {}, p.ejected_for_ms ? seconds(p.ejected_for_ms) : "–"),
        el("td", { class: "num" }, p.effective_weight),
        el("td", { class: "num" }, p.weight),
        el("td", { class: "num" }, Number(p.score).toFixed(3)),
        el("td", {}, `${p.cost.percent} % + ${p.cost.fixed}`),
        el("td", { class: "num" }, Number.isFinite(success) ? `${(success * 100).toFixed(1)} %` : p.success_rate),
        el("td", { class: "num" }, p.latency_ms === null ? "–" : ms(Number(p.latency_ms).toFixed(1))),
        el("td", { class: "num" }, p.consecutive_failures),
        el("td", { class: "num" }, p.ejections),
        el("td", {}, p.address));
    }))));
  $("#pools").replaceChildren(...tables);
}

// A line chart on a canvas: one line per series, a zero-based y axis, time on x.
function drawChart(name, times, series) {
  const canvas = $(`#chart-${name}`);
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 600;
  const height = canvas.clientHeight || 160;
  canvas.width = width * ratio;
  canvas.height = height * ratio;
  const g = canvas.getContext("2d");
  g.scale(ratio, ratio);
  g.clearRect(0, 0, width, height);
  const left = 44, right = 8, top = 8, bottom = 18;
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const x = (i) => left + (times.length < 2 ? 0 : (i / (times.length - 1)) * (width - left - right));
  const y = (v) => top + (1 - v / max) * (height - top - bottom);
  g.strokeStyle = "#e5e7eb";
  g.fillStyle = "#667085";
  g.font = "11px system-ui, sans-serif";
  for (const fraction of [0, 0.5, 1]) {
    const value = max * fraction;
    g.beginPath(); g.moveTo(left, y(value)); g.lineTo(width - right, y(value)); g.stroke();
    g.fillText(value >= 10 ? value.toFixed(0) : value.toFixed(1), 4, y(value) + 4);
  }
  if (times.length) {
    const clock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    g.fillText(clock(times[0]), left, height - 4);
    const end = clock(times[times.length - 1]);
    g.fillText(end, width - right - g.measureText(end).width, height - 4);
  }
  series.forEach((s, index) => {
    g.strokeStyle = COLORS[index % COLORS.length];
    g.lineWidth = 1.5;
    g.beginPath();
    s.values.forEach((v, i) => (i ? g.lineTo(x(i), y(v)) : g.moveTo(x(i), y(v))));
    g.stroke();
  });
  $(`#legend-${name}`).replaceChildren(...series.map((s, index) => {
    const swatch = el("span", { class: "swatch" });
    swatch.style.background = COLORS[index % COLORS.length];
    const last = s.values.length ? s.values[s.values.length - 1] : 0;
    return el("li", { "data-series": s.name, "data-last": last }, swatch, `${s.name} ${last.toFixed(2)}/s`);
  }));
}

function renderTraffic(body) {
  if (body.disabled) {
    $("#traffic-note").textContent = `No charts: ${body.disabled}.`;
    return;
  }
  $("#traffic-note").textContent = body.times.length < 2
    ? `Collecting: a point every ${body.interval_seconds} s.` : "";
  for (const [group, key] of [["tenant", "tenants"], ["route", "routes"]]) {
    for (const measure of ["requests", "errors"]) {
      const series = Object.entries(body[key]).map(([name, values]) => ({ name, values: values[measure] }));
      drawChart(`${group}-${measure}`, body.times, series);
    }
  }
}

// The live feed: the official SignalR client on this origin's hub, in the chosen tenant's group.
function addToFeed(envelope) {
  const alert = envelope.type === "system.alert";
  const data = envelope.data ?? {};
  const item = el("li", {
    class: alert ? "alert" : "", "data-type": envelope.type,
    "data-correlation": envelope.correlationid ?? "", "data-tenant": envelope.tenant ?? "",
  },
  el("span", { class: "type" }, envelope.type),
  el("span", {}, `${envelope.time ?? ""} · ${envelope.tenant ?? "all tenants"} · ${envelope.correlationid ?? envelope.id ?? ""}`),
  el("span", { class: "data" }, alert ? `${data.code ?? ""}: ${data.message ?? JSON.stringify(data)}` : JSON.stringify(data)));
  const feed = $("#feed");
  feed.prepend(item);
  while (feed.children.length > 200) feed.lastChild.remove();
}

function feedState(text) {
  $("#feed-state").textContent = text;
}

async function join(tenant) {
  if (!hub || hub.state !== signalR.HubConnectionState.Connected || !tenant) return;
  try {
    if (joined && joined !== tenant) await hub.invoke("LeaveTenantGroup", joined);
    await hub.invoke("JoinTenantGroup", tenant, null);
    joined = tenant;
    feedState(`live: ${tenant}`);
  } catch (error) {
    feedState(`cannot join ${tenant}: ${error.message || error}`);
  }
}

function startFeed(c) {
  if (!c.hub_path) {
    feedState("the hub is off (it needs an auth section and notifications)");
    return;
  }
  if (typeof signalR === "undefined") {
    feedState("the SignalR client did not load");
    return;
  }
  hub = new signalR.HubConnectionBuilder()
    .withUrl(c.hub_path, { accessTokenFactory: () => token })
    .withAutomaticReconnect()
    .configureLogging(signalR.LogLevel.None)
    .build();
  for (const type of c.event_types || []) hub.on(type, addToFeed);
  hub.onreconnecting(() => feedState("reconnecting…"));
  hub.onreconnected(() => { const t = joined; joined = null; join(t || $("#feed-tenant").value); });
  hub.onclose(() => feedState("disconnected"));
  feedState("connecting…");
  hub.start()
    .then(() => join($("#feed-tenant").value))
    .catch((error) => feedState(`cannot connect: ${error.message || error}`));
}

document.addEventListener("DOMContentLoaded", () => {
  $("#sign-in-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("#token").value;
    $("#token").value = "";
    signIn(value);
  });
  $("#sign-out").addEventListener("click", () => showSignIn("Signed out."));
  $("#feed-tenant").addEventListener("change", (event) => join(event.target.value));
  $("#feed-clear").addEventListener("click", () => $("#feed").replaceChildren());
  if (token) signIn(token);
  else showSignIn("");
});
