// Switchyard management UI: one file, no dependencies, no build step.
//
// Talks to the RabbitMQ-compatible management API under api/ on the same
// origin with HTTP basic auth (the credentials live in sessionStorage only).
// Every server-provided string reaches the DOM through textContent or
// setAttribute, never through innerHTML.
"use strict";

(() => {
  // ---------------------------------------------------------------------
  // constants and persisted UI state
  // ---------------------------------------------------------------------

  const AUTH_KEY = "switchyard.auth";
  const WHO_KEY = "switchyard.whoami";
  const HISTORY_KEY = "switchyard.history";
  const STATE_KEY = "switchyard.ui";
  const SAMPLE_MS = 5000; // overview poll, for the charts
  const WINDOW_MS = 10 * 60 * 1000; // chart history kept client-side
  const REQUEST_TIMEOUT_MS = 30000;
  const KNOWN_PROTOCOLS = ["AMQP 0-9-1", "MQTT 3.1.1", "MQTT 5.0", "STOMP 1.2", "Web STOMP", "Web MQTT"];
  const enc = encodeURIComponent;

  const state = Object.assign(
    {
      refresh: 5,
      vhost: "", // "" = all virtual hosts
      queues: { page: 1, pageSize: 100, name: "", regex: false, sort: "name", reverse: false },
      exchangesFilter: "",
      route: { mode: "exchange", exchange: "amq.topic", routingKey: "", headers: "", mqtt: "", stomp: "" },
    },
    readJSON(sessionStorage, STATE_KEY) || {},
  );
  function saveState() {
    try {
      sessionStorage.setItem(STATE_KEY, JSON.stringify(state));
    } catch {
      // storage full or disabled: the state is just not remembered
    }
  }

  function readJSON(storage, key) {
    try {
      const text = storage.getItem(key);
      return text ? JSON.parse(text) : null;
    } catch {
      return null;
    }
  }

  // ---------------------------------------------------------------------
  // DOM helpers (text only: no innerHTML anywhere)
  // ---------------------------------------------------------------------

  const $ = (sel, root = document) => root.querySelector(sel);

  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    let value;
    if (attrs) {
      for (const [k, v] of Object.entries(attrs)) {
        if (v == null || v === false) continue;
        if (k === "class") el.className = v;
        else if (k === "dataset") Object.assign(el.dataset, v);
        else if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
        else if (k === "value") value = v;
        else if (k === "checked" || k === "selected" || k === "disabled" || k === "hidden") el[k] = true;
        else el.setAttribute(k, v === true ? "" : String(v));
      }
    }
    add(el, kids);
    if (value !== undefined) el.value = value;
    return el;
  }

  function add(el, kids) {
    for (const kid of kids.flat(Infinity)) {
      if (kid == null || kid === false) continue;
      el.append(kid instanceof Node ? kid : String(kid));
    }
    return el;
  }

  const frag = (...kids) => add(document.createDocumentFragment(), kids);
  // replaceChildren() would turn a null into the text "null"
  function setKids(el, ...kids) {
    el.replaceChildren();
    return add(el, kids);
  }

  // ---------------------------------------------------------------------
  // formatting
  // ---------------------------------------------------------------------

  const numberFmt = new Intl.NumberFormat("en-US");
  function fmtNum(n) {
    if (n == null || n === "") return "";
    const v = Number(n);
    return Number.isFinite(v) ? numberFmt.format(v) : String(n);
  }
  function fmtRate(r) {
    if (r == null) return "";
    const v = Number(r) || 0;
    if (v === 0) return "0.0/s";
    if (v < 10) return v.toFixed(1) + "/s";
    return numberFmt.format(Math.round(v)) + "/s";
  }
  function fmtBytes(n) {
    if (n == null) return "";
    let v = Number(n) || 0;
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(v) >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (i === 0 ? String(Math.round(v)) : v.toFixed(v < 10 ? 1 : 0)) + " " + units[i];
  }
  function fmtCompact(v) {
    const a = Math.abs(v);
    if (a >= 1e9) return +(v / 1e9).toFixed(1) + "G";
    if (a >= 1e6) return +(v / 1e6).toFixed(1) + "M";
    if (a >= 1e3) return +(v / 1e3).toFixed(1) + "k";
    return String(+v.toFixed(2));
  }
  function get(obj, path) {
    let v = obj;
    for (const p of path.split(".")) {
      if (v == null) return undefined;
      v = v[p];
    }
    return v;
  }
  const rateOf = (obj, stat) => get(obj, `message_stats.${stat}_details.rate`);
  function tagsOf(tags) {
    if (Array.isArray(tags)) return tags;
    if (typeof tags === "string") return tags.split(",").map((t) => t.trim()).filter(Boolean);
    return [];
  }
  function jsonText(v) {
    if (v == null) return "";
    if (typeof v === "string") return v;
    return JSON.stringify(v);
  }
  function vhostLabel(v) {
    return v === "/" ? "/" : v;
  }
  const exchangeLabel = (name) => (name === "" ? "(AMQP default)" : name);
  const exchangeSeg = (name) => (name === "" ? "amq.default" : name);

  // key=value lines (arguments, headers, policy definitions); numbers and
  // booleans are typed, everything else stays a string.
  function parseKV(text, what) {
    const out = {};
    const lines = String(text || "").split(/\r?\n/);
    lines.forEach((raw, i) => {
      const line = raw.trim();
      if (!line) return;
      const eq = line.indexOf("=");
      if (eq <= 0) throw new Error(`${what}, line ${i + 1}: expected key=value, got "${line}"`);
      const key = line.slice(0, eq).trim();
      const val = line.slice(eq + 1).trim();
      out[key] = typeValue(val);
    });
    return out;
  }
  function typeValue(val) {
    if (/^-?\d+(\.\d+)?$/.test(val)) return Number(val);
    if (val === "true") return true;
    if (val === "false") return false;
    return val;
  }

  // ---------------------------------------------------------------------
  // messages (the visible message area)
  // ---------------------------------------------------------------------

  const messageTimers = new Map();
  function showMessage(kind, text, opts = {}) {
    const box = $("#messages");
    if (!box) return;
    const key = opts.key || `${kind}:${text}`;
    for (const old of box.children) if (old.dataset.key === key) old.remove();
    const close = h("button", { type: "button", class: "msg-close", title: "Dismiss", "aria-label": "Dismiss" }, "×");
    const el = h(
      "div",
      { class: `msg msg-${kind}`, role: kind === "error" ? "alert" : "status", dataset: { key } },
      h("span", { class: "msg-text" }, text),
      opts.detail ? h("span", { class: "msg-detail" }, opts.detail) : null,
      close,
    );
    close.addEventListener("click", () => el.remove());
    box.prepend(el);
    while (box.children.length > 5) box.lastElementChild.remove();
    clearTimeout(messageTimers.get(key));
    if (kind !== "error") messageTimers.set(key, setTimeout(() => el.remove(), opts.ttl || 6000));
  }
  // shown after the next navigation (which clears the message area)
  let pendingFlash = null;
  function flash(kind, text) {
    pendingFlash = { kind, text };
  }
  function clearMessage(key) {
    const box = $("#messages");
    if (!box) return;
    for (const old of [...box.children]) if (old.dataset.key === key) old.remove();
  }
  function clearMessages() {
    const box = $("#messages");
    if (box) box.replaceChildren();
  }
  const info = (text, opts) => showMessage("info", text, opts);
  const warn = (text, opts) => showMessage("warn", text, opts);
  function reportError(err, key) {
    if (err && err.silent) return;
    showMessage("error", errorText(err), { key: key || undefined, detail: err && err.request ? err.request : undefined });
  }
  function errorText(err) {
    if (err instanceof ApiError) {
      const head = err.status ? `${err.status}${err.error ? " " + err.error : ""}` : err.error || "error";
      return err.reason ? `${head}: ${err.reason}` : head;
    }
    return err && err.message ? err.message : String(err);
  }

  // ---------------------------------------------------------------------
  // API access
  // ---------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, error, reason, method, path) {
      super(`${status} ${error || ""} ${reason || ""}`.trim());
      this.status = status;
      this.error = error;
      this.reason = reason;
      this.request = method ? `${method} /${path}` : undefined;
    }
  }

  function basicToken(user, pass) {
    const bytes = new TextEncoder().encode(`${user}:${pass}`);
    let bin = "";
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  async function rawRequest(method, path, body, token) {
    const headers = { Accept: "application/json", "X-Requested-With": "XMLHttpRequest" };
    if (token) headers.Authorization = `Basic ${token}`;
    const init = { method, headers, cache: "no-store", credentials: "omit" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(), REQUEST_TIMEOUT_MS);
    init.signal = ctrl.signal;
    let resp;
    let text;
    try {
      resp = await fetch(path, init);
      text = await resp.text();
    } catch (e) {
      const reason = e && e.name === "AbortError" ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : `network error (${e.message || e})`;
      throw new ApiError(0, "unreachable", reason, method, path);
    } finally {
      clearTimeout(timer);
    }
    let data = null;
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = text;
      }
    }
    return { status: resp.status, ok: resp.ok, data };
  }

  function apiErrorFrom(res, method, path) {
    const d = res.data;
    if (d && typeof d === "object") return new ApiError(res.status, d.error, d.reason, method, path);
    return new ApiError(res.status, httpStatusText(res.status), typeof d === "string" ? d.slice(0, 300) : "", method, path);
  }
  function httpStatusText(s) {
    return { 400: "bad_request", 401: "not_authorised", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 500: "internal_error" }[s] || "";
  }

  async function api(method, path, body) {
    const res = await rawRequest(method, path, body, sessionStorage.getItem(AUTH_KEY));
    if (res.status === 401) await onUnauthorized(res, method, path);
    if (!res.ok) throw apiErrorFrom(res, method, path);
    return res.data;
  }
  const apiGet = (path) => api("GET", path);

  // A 401 means either the credentials are no longer accepted (back to the
  // login form) or the user lacks a tag for this endpoint (stay, show it).
  async function onUnauthorized(res, method, path) {
    const check = await rawRequest("GET", "api/whoami", undefined, sessionStorage.getItem(AUTH_KEY)).catch(() => null);
    if (check && check.status === 401) {
      const err = apiErrorFrom(res, method, path);
      logout(`Please log in again (${errorText(err)}).`);
      err.silent = true;
      throw err;
    }
  }

  // ---------------------------------------------------------------------
  // login / logout
  // ---------------------------------------------------------------------

  let whoami = null;

  function showLogin(message) {
    $("#app").hidden = true;
    $("#login").hidden = false;
    document.body.dataset.page = "login";
    const errBox = $("#login-error");
    errBox.hidden = !message;
    errBox.textContent = message || "";
    const user = $("#login-user");
    if (!user.value) user.focus();
    else $("#login-pass").focus();
  }

  async function submitLogin(ev) {
    ev.preventDefault();
    const user = $("#login-user").value.trim();
    const pass = $("#login-pass").value;
    const btn = $("#login-submit");
    const errBox = $("#login-error");
    errBox.hidden = true;
    btn.disabled = true;
    btn.textContent = "Logging in…";
    try {
      const token = basicToken(user, pass);
      const res = await rawRequest("GET", "api/whoami", undefined, token);
      if (res.status === 401) {
        const reason = res.data && typeof res.data === "object" ? String(res.data.reason || "") : "";
        // RabbitMQ says just "Login failed"; anything more specific is shown as is
        const why = !reason || /^login failed\.?$/i.test(reason.trim()) ? "wrong username or password" : reason;
        throw new Error(`Login failed: ${why}.`);
      }
      if (!res.ok) throw apiErrorFrom(res, "GET", "api/whoami");
      sessionStorage.setItem(AUTH_KEY, token);
      sessionStorage.setItem(WHO_KEY, JSON.stringify(res.data));
      $("#login-pass").value = "";
      startApp(res.data);
    } catch (e) {
      errBox.textContent = e instanceof ApiError ? `Login failed: ${errorText(e)}` : e.message;
      errBox.hidden = false;
      $("#login-pass").value = "";
      $("#login-pass").focus();
    } finally {
      btn.disabled = false;
      btn.textContent = "Log in";
    }
  }

  function logout(message) {
    sessionStorage.removeItem(AUTH_KEY);
    sessionStorage.removeItem(WHO_KEY);
    sessionStorage.removeItem(HISTORY_KEY);
    chartHistory.length = 0;
    stopSampler();
    if (current) disposeCtx(current);
    current = null;
    clearMessages();
    $("#view").replaceChildren();
    whoami = null;
    showLogin(message);
  }

  function startApp(who) {
    whoami = who;
    const tags = tagsOf(who.tags);
    setKids($("#user-info"), 
      h("span", { class: "user-name" }, who.name),
      tags.length ? h("span", { class: "muted" }, ` (${tags.join(", ")})`) : null,
    );
    for (const el of document.querySelectorAll("#nav [data-needs]")) {
      const needs = el.dataset.needs.split(" ");
      el.hidden = !needs.some((t) => tags.includes(t));
    }
    $("#login").hidden = true;
    $("#app").hidden = false;
    startSampler();
    route();
  }

  // ---------------------------------------------------------------------
  // overview sampler: feeds the charts (kept ~10 minutes, client-side)
  // ---------------------------------------------------------------------

  const chartHistory = (readJSON(sessionStorage, HISTORY_KEY) || []).filter((s) => s && Date.now() - s.t < WINDOW_MS);
  let lastOverview = null;
  let samplerTimer = null;
  const sampleListeners = new Set();

  function startSampler() {
    stopSampler();
    sample();
    samplerTimer = setInterval(sample, SAMPLE_MS);
  }
  function stopSampler() {
    clearInterval(samplerTimer);
    samplerTimer = null;
  }
  async function sample() {
    let ov;
    try {
      ov = await apiGet("api/overview");
    } catch (e) {
      for (const fn of sampleListeners) fn(null, e);
      return;
    }
    lastOverview = ov;
    const qt = ov.queue_totals || {};
    const t = Date.now();
    chartHistory.push({
      t,
      publish: rateOf(ov, "publish") || 0,
      deliver_get: rateOf(ov, "deliver_get") || 0,
      ack: rateOf(ov, "ack") || 0,
      confirm: rateOf(ov, "confirm") || 0,
      messages: qt.messages || 0,
      ready: qt.messages_ready || 0,
      unacked: qt.messages_unacknowledged || 0,
    });
    while (chartHistory.length && t - chartHistory[0].t > WINDOW_MS) chartHistory.shift();
    try {
      sessionStorage.setItem(HISTORY_KEY, JSON.stringify(chartHistory));
    } catch {
      // not remembered across reloads then
    }
    updateNodeInfo(ov);
    for (const fn of sampleListeners) fn(ov, null);
  }
  function updateNodeInfo(ov) {
    const product = ov.product_name || "Switchyard";
    const version = ov.product_version || ov.rabbitmq_version || "";
    setKids($("#node-info"), 
      h("span", { title: "node" }, ov.node || ""),
      ov.cluster_name && ov.cluster_name !== ov.node ? h("span", { class: "muted", title: "cluster" }, ` · ${ov.cluster_name}`) : null,
      h("span", { class: "muted" }, ` · ${product} ${version}`),
    );
  }

  // ---------------------------------------------------------------------
  // charts: a small line chart on <canvas>
  // ---------------------------------------------------------------------

  function niceTicks(max, count = 4) {
    if (!(max > 0)) return [0, 1];
    const raw = max / count;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    let step = p;
    for (const m of [1, 2, 2.5, 5, 10]) {
      if (m * p >= raw) {
        step = m * p;
        break;
      }
    }
    const ticks = [];
    for (let v = 0; v <= max + step * 0.999; v += step) ticks.push(+v.toFixed(10));
    return ticks;
  }

  const CHART_SCALES = [
    { window: 60000, step: 10000 },
    { window: 120000, step: 20000 },
    { window: 300000, step: 60000 },
    { window: WINDOW_MS, step: 120000 },
  ];

  function drawChart(canvas, samples, series) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth;
    const ht = canvas.clientHeight;
    if (!w || !ht) return;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(ht * dpr);
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, ht);
    const padL = 44;
    const padR = 8;
    const padT = 8;
    const padB = 20;
    const plotW = w - padL - padR;
    const plotH = ht - padT - padB;
    const now = Date.now();
    // The time axis grows with the history: 1, 2, 5, then 10 minutes.
    const span = samples.length ? now - samples[0].t : 0;
    const scale = CHART_SCALES.find((sc) => sc.window >= span) || CHART_SCALES[CHART_SCALES.length - 1];
    const t0 = now - scale.window;
    let max = 0;
    for (const s of samples) for (const k of series) max = Math.max(max, Number(s[k.key]) || 0);
    const ticks = niceTicks(max);
    const ymax = ticks[ticks.length - 1] || 1;
    const xOf = (t) => padL + ((t - t0) / scale.window) * plotW;
    const yOf = (v) => padT + plotH - (v / ymax) * plotH;

    g.font = "11px system-ui, -apple-system, 'Segoe UI', sans-serif";
    g.textBaseline = "middle";
    g.lineWidth = 1;
    for (const v of ticks) {
      const y = Math.round(yOf(v)) + 0.5;
      g.strokeStyle = v === 0 ? "#c4cad3" : "#e8ebef";
      g.beginPath();
      g.moveTo(padL, y);
      g.lineTo(w - padR, y);
      g.stroke();
      g.fillStyle = "#6b7480";
      g.textAlign = "right";
      g.fillText(fmtCompact(v), padL - 6, y);
    }
    g.textAlign = "center";
    g.textBaseline = "alphabetic";
    for (let ago = scale.window; ago >= 0; ago -= scale.step) {
      const x = xOf(now - ago);
      const label = ago === 0 ? "now" : ago < 60000 ? `−${ago / 1000} s` : `−${ago / 60000} min`;
      g.fillStyle = "#6b7480";
      g.fillText(label, Math.min(Math.max(x, padL + 16), w - padR - 12), ht - 5);
      g.strokeStyle = "#f0f2f5";
      g.beginPath();
      g.moveTo(Math.round(x) + 0.5, padT);
      g.lineTo(Math.round(x) + 0.5, padT + plotH);
      g.stroke();
    }

    g.save();
    g.beginPath();
    g.rect(padL, padT - 2, plotW + 2, plotH + 4);
    g.clip();
    for (const k of series) {
      g.strokeStyle = k.color;
      g.lineWidth = 1.75;
      g.lineJoin = "round";
      g.beginPath();
      let prev = null;
      for (const s of samples) {
        const x = xOf(s.t);
        const y = yOf(Number(s[k.key]) || 0);
        // a gap of more than three samples (page closed, poll failed) breaks the line
        if (prev === null || s.t - prev > SAMPLE_MS * 3) g.moveTo(x, y);
        else g.lineTo(x, y);
        prev = s.t;
      }
      g.stroke();
      if (samples.length === 1) {
        g.fillStyle = k.color;
        g.beginPath();
        g.arc(xOf(samples[0].t), yOf(Number(samples[0][k.key]) || 0), 2.5, 0, Math.PI * 2);
        g.fill();
      }
    }
    g.restore();
    if (samples.length < 2) {
      g.fillStyle = "#8a929c";
      g.textAlign = "center";
      g.fillText("collecting samples (every 5 s)…", padL + plotW / 2, padT + plotH / 2);
    }
  }

  function chartPanel(title, series, unit) {
    const canvas = h("canvas", { class: "chart", role: "img", "aria-label": title });
    const legend = h("div", { class: "legend" });
    const panel = h("section", { class: "panel chart-panel" }, h("h2", null, title), canvas, legend);
    function update() {
      drawChart(canvas, chartHistory, series);
      const last = chartHistory[chartHistory.length - 1] || {};
      setKids(legend, 
        ...series.map((k) =>
          h(
            "span",
            { class: "legend-item", dataset: { series: k.key } },
            h("span", { class: "swatch", style: `background:${k.color}` }),
            k.label,
            " ",
            h("b", null, unit === "rate" ? fmtRate(last[k.key] || 0) : fmtNum(last[k.key] || 0)),
          ),
        ),
      );
    }
    return { panel, canvas, update };
  }

  // ---------------------------------------------------------------------
  // generic building blocks
  // ---------------------------------------------------------------------

  function pageHeader(title, ...extra) {
    return h("div", { class: "page-head" }, h("h1", null, title), h("div", { class: "page-tools" }, extra));
  }

  function panel(title, ...kids) {
    return h("section", { class: "panel" }, title ? h("h2", null, title) : null, kids);
  }

  // columns: [{label, key?, cls?, sort?, title?, render(row) -> Node|string}]
  function table(columns, rows, opts = {}) {
    const thead = h(
      "thead",
      null,
      h(
        "tr",
        null,
        columns.map((c) => {
          if (!c.sort || !opts.onSort) return h("th", { class: c.cls, title: c.title }, c.label);
          const active = opts.sort === c.sort;
          const arrow = active ? (opts.reverse ? " ▼" : " ▲") : "";
          return h(
            "th",
            { class: `${c.cls || ""} sortable${active ? " sorted" : ""}`, title: c.title || `Sort by ${c.label}` },
            h("button", { type: "button", class: "sort-btn", dataset: { sort: c.sort }, onclick: () => opts.onSort(c.sort) }, c.label, arrow),
          );
        }),
      ),
    );
    const tbody = h("tbody");
    if (!rows.length) {
      tbody.append(h("tr", { class: "empty" }, h("td", { colspan: columns.length }, opts.empty || "Nothing here.")));
    }
    for (const r of rows) {
      const tr = h("tr", opts.rowAttrs ? opts.rowAttrs(r) : null);
      for (const c of columns) {
        const v = c.render ? c.render(r) : get(r, c.key);
        tr.append(h("td", { class: c.cls }, v == null ? "" : v));
      }
      tbody.append(tr);
    }
    return h("div", { class: "table-wrap" }, h("table", { class: `grid ${opts.cls || ""}` }, thead, tbody));
  }

  function kvTable(pairs) {
    return h(
      "table",
      { class: "kv" },
      h(
        "tbody",
        null,
        pairs.filter((p) => p && p[1] !== undefined && p[1] !== null && p[1] !== "").map(([k, v]) => h("tr", null, h("th", null, k), h("td", null, v))),
      ),
    );
  }

  function argsView(args) {
    if (!args || typeof args !== "object" || !Object.keys(args).length) return "";
    return h(
      "span",
      { class: "args" },
      Object.entries(args).map(([k, v]) => h("span", { class: "arg" }, h("span", { class: "arg-k" }, k), "=", jsonText(v))),
    );
  }

  function badge(text, cls, title) {
    return h("span", { class: `badge ${cls || ""}`, title }, text);
  }

  function protoClass(p) {
    const s = String(p || "").toLowerCase();
    if (s.includes("web")) return "p-web";
    if (s.includes("mqtt")) return "p-mqtt";
    if (s.includes("stomp")) return "p-stomp";
    if (s.includes("amqp")) return "p-amqp";
    return "";
  }
  const protoBadge = (p) => badge(p || "?", `proto ${protoClass(p)}`);

  function queueLink(vhost, name) {
    return h("a", { href: `#/queues/${enc(vhost)}/${enc(name)}`, class: "name", title: name }, name);
  }
  function exchangeLink(vhost, name) {
    return h("a", { href: `#/exchanges/${enc(vhost)}/${enc(exchangeSeg(name))}`, class: "name", title: exchangeLabel(name) }, exchangeLabel(name));
  }

  function features(o, withType) {
    const out = [];
    if (withType && o.type && o.type !== "classic") out.push(badge(o.type, "feat qtype", `${o.type} queue`));
    if (o.durable) out.push(badge("D", "feat", "durable"));
    if (o.auto_delete) out.push(badge("AD", "feat", "auto-delete"));
    if (o.exclusive) out.push(badge("Excl", "feat", "exclusive"));
    if (o.internal) out.push(badge("I", "feat", "internal"));
    const args = o.arguments && typeof o.arguments === "object" ? Object.keys(o.arguments) : [];
    if (args.length) out.push(badge("Args", "feat args-badge", args.map((k) => `${k}=${jsonText(o.arguments[k])}`).join("\n")));
    if (o.policy) out.push(badge(o.policy, "feat policy", `policy ${o.policy}`));
    return h("span", { class: "feats" }, out);
  }

  function stateBadge(s) {
    if (!s) return "";
    const cls = s === "running" ? "ok" : s === "idle" ? "idle" : s === "flow" || s === "blocked" || s === "blocking" ? "warn" : "bad";
    return badge(s, `state ${cls}`);
  }

  // form helpers
  function field(label, input, hint) {
    const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
    input.id = id;
    return h("div", { class: "field" }, h("label", { for: id }, label), h("div", { class: "field-input" }, input, hint ? h("div", { class: "hint" }, hint) : null));
  }
  function select(options, value, attrs) {
    const sel = h("select", attrs);
    for (const o of options) {
      const [v, label] = Array.isArray(o) ? o : [o, o];
      sel.append(h("option", { value: v }, label));
    }
    if (value !== undefined) sel.value = value;
    return sel;
  }

  // A form whose submit is async: the button is disabled while it runs and
  // any error goes to the message area.
  function asyncForm(attrs, kids, onsubmit) {
    const form = h("form", Object.assign({ class: "form", novalidate: false }, attrs), kids);
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const btns = form.querySelectorAll("button[type=submit]");
      btns.forEach((b) => (b.disabled = true));
      try {
        await onsubmit(form);
      } catch (e) {
        reportError(e);
      } finally {
        btns.forEach((b) => (b.disabled = false));
      }
    });
    return form;
  }

  function actionButton(label, cls, onclick, attrs) {
    const b = h("button", Object.assign({ type: "button", class: `btn ${cls || ""}` }, attrs || {}), label);
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await onclick();
      } catch (e) {
        reportError(e);
      } finally {
        b.disabled = false;
      }
    });
    return b;
  }

  let vhostCache = { at: 0, list: null };
  async function vhostNames() {
    if (vhostCache.list && Date.now() - vhostCache.at < 30000) return vhostCache.list;
    const list = await apiGet("api/vhosts");
    vhostCache = { at: Date.now(), list: list.map((v) => v.name).sort() };
    return vhostCache.list;
  }
  function forgetVhosts() {
    vhostCache = { at: 0, list: null };
  }

  // A vhost <select>; `all` adds "All virtual hosts" (value "").
  function vhostSelect(value, all, onchange) {
    const sel = h("select", { class: "vhost-select", "aria-label": "Virtual host" });
    sel.append(h("option", { value }, all && value === "" ? "All virtual hosts" : vhostLabel(value)));
    sel.value = value;
    vhostNames()
      .then((names) => {
        const keep = sel.value;
        sel.replaceChildren();
        if (all) sel.append(h("option", { value: "" }, "All virtual hosts"));
        for (const n of names) sel.append(h("option", { value: n }, vhostLabel(n)));
        if (keep && !names.includes(keep)) sel.append(h("option", { value: keep }, vhostLabel(keep)));
        sel.value = keep;
      })
      .catch((e) => reportError(e, "vhosts"));
    if (onchange) sel.addEventListener("change", () => onchange(sel.value));
    return sel;
  }
  const defaultVhost = () => state.vhost || "/";

  function debounce(fn, ms) {
    let t;
    return (...a) => {
      clearTimeout(t);
      t = setTimeout(() => fn(...a), ms);
    };
  }

  // ---------------------------------------------------------------------
  // router and page lifecycle
  // ---------------------------------------------------------------------

  let current = null;

  function newCtx() {
    const ctx = {
      alive: true,
      timers: [],
      cleanups: [],
      every(fn, ms) {
        if (ms > 0) ctx.timers.push(setInterval(fn, ms));
      },
      onCleanup(fn) {
        ctx.cleanups.push(fn);
      },
    };
    return ctx;
  }
  function disposeCtx(ctx) {
    ctx.alive = false;
    ctx.timers.forEach(clearInterval);
    for (const fn of ctx.cleanups) {
      try {
        fn();
      } catch {
        // a cleanup failing must not stop the others
      }
    }
  }

  // Loads into `el` now and every refresh period; returns a function that
  // reloads on demand (after a change the user made).
  function live(ctx, el, loader, key) {
    let busy = false;
    let again = false;
    const errKey = key || "poll";
    const run = async () => {
      if (!ctx.alive) return;
      if (busy) {
        again = true;
        return;
      }
      busy = true;
      try {
        const node = await loader();
        if (ctx.alive) {
          setKids(el, node);
          el.dataset.state = "loaded";
          clearMessage(errKey);
        }
      } catch (e) {
        if (ctx.alive && !e.silent) {
          reportError(e, errKey);
          if (el.dataset.state !== "loaded") setKids(el, h("p", { class: "load-error" }, "Could not load: ", errorText(e)));
          el.dataset.state = el.dataset.state === "loaded" ? "loaded" : "error";
        }
      } finally {
        busy = false;
        if (again && ctx.alive) {
          again = false;
          run();
        }
      }
    };
    el.dataset.state = "loading";
    setKids(el, h("p", { class: "muted loading" }, "Loading…"));
    run();
    ctx.every(run, state.refresh * 1000);
    return run;
  }

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    return raw.split("/").map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
  }

  const pages = {
    overview: pageOverview,
    connections: pageConnections,
    channels: pageChannels,
    consumers: pageConsumers,
    queues: pageQueues,
    exchanges: pageExchanges,
    route: pageRoute,
    users: pageUsers,
    vhosts: pageVhosts,
    permissions: pagePermissions,
    policies: pagePolicies,
    definitions: pageDefinitions,
  };

  function route() {
    if (!sessionStorage.getItem(AUTH_KEY)) return showLogin();
    const parts = parseHash();
    let name = parts[0] || "overview";
    if (!pages[name]) name = "notfound";
    let detail = false;
    if ((name === "queues" || name === "exchanges") && parts.length >= 3) detail = true;
    if (current) disposeCtx(current);
    current = newCtx();
    clearMessages();
    if (pendingFlash) {
      showMessage(pendingFlash.kind, pendingFlash.text);
      pendingFlash = null;
    }
    document.body.dataset.page = detail ? name.replace(/s$/, "") : name;
    for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.page === name);
    const view = $("#view");
    view.replaceChildren();
    view.scrollTop = 0;
    window.scrollTo(0, 0);
    if (name === "notfound") {
      view.append(pageHeader("Not found"), h("p", null, "There is no page ", h("code", null, location.hash), ". ", h("a", { href: "#/overview" }, "Go to the overview.")));
      return;
    }
    try {
      if (detail && name === "queues") pageQueue(current, view, parts[1], parts.slice(2).join("/"));
      else if (detail && name === "exchanges") pageExchange(current, view, parts[1], parts.slice(2).join("/"));
      else pages[name](current, view);
    } catch (e) {
      reportError(e);
    }
  }

  // ---------------------------------------------------------------------
  // Overview
  // ---------------------------------------------------------------------

  function pageOverview(ctx, view) {
    const totals = h("div", { class: "tiles", id: "totals" }, h("p", { class: "muted" }, "Loading…"));
    const rates = chartPanel("Message rates", [
      { key: "publish", label: "Publish", color: "#2f6fd0" },
      { key: "deliver_get", label: "Deliver / get", color: "#1f9d6a" },
      { key: "ack", label: "Ack", color: "#d9822b" },
      { key: "confirm", label: "Confirm", color: "#8a4fc8" },
    ], "rate");
    const queued = chartPanel("Queued messages", [
      { key: "messages", label: "Total", color: "#56606b" },
      { key: "ready", label: "Ready", color: "#2f6fd0" },
      { key: "unacked", label: "Unacked", color: "#d9822b" },
    ], "count");
    rates.panel.id = "chart-rates";
    queued.panel.id = "chart-queued";
    const byProto = h("div", { id: "by-protocol" }, h("p", { class: "muted" }, "Loading…"));
    const node = h("div", { id: "node" }, h("p", { class: "muted" }, "Loading…"));
    const listeners = h("div", { id: "listeners" }, h("p", { class: "muted" }, "Loading…"));

    view.append(
      pageHeader("Overview"),
      totals,
      h("div", { class: "cols-2" }, rates.panel, queued.panel),
      h(
        "div",
        { class: "cols-3" },
        panel("Connections by protocol", byProto),
        panel("Listeners", listeners),
        panel("Node", node),
      ),
    );

    const redraw = () => {
      rates.update();
      queued.update();
    };
    const ro = new ResizeObserver(redraw);
    ro.observe(rates.canvas);
    ro.observe(queued.canvas);
    ctx.onCleanup(() => ro.disconnect());

    const show = (ov, err) => {
      if (!ctx.alive) return;
      if (err) {
        if (!err.silent) reportError(err, "overview");
        return;
      }
      clearMessage("overview");
      renderTotals(totals, ov);
      renderNode(node, ov);
      renderListeners(listeners, ov);
      redraw();
    };
    sampleListeners.add(show);
    ctx.onCleanup(() => sampleListeners.delete(show));
    if (lastOverview) show(lastOverview, null);
    redraw();

    const loadProtocols = async () => {
      // only the protocol of each connection is needed (RabbitMQ's columns=)
      const conns = await apiGet("api/connections?columns=name,protocol");
      const counts = new Map(KNOWN_PROTOCOLS.map((p) => [p, 0]));
      for (const c of conns || []) {
        const p = c.protocol || "unknown";
        counts.set(p, (counts.get(p) || 0) + 1);
      }
      const total = (conns || []).length;
      const rows = [...counts.entries()].map(([protocol, count]) => ({ protocol, count }));
      return table(
        [
          { label: "Protocol", render: (r) => protoBadge(r.protocol) },
          { label: "Connections", cls: "num", render: (r) => fmtNum(r.count) },
          {
            label: "Share",
            cls: "bar-cell",
            render: (r) => h("span", { class: "bar" }, h("span", { class: `bar-fill ${protoClass(r.protocol)}`, style: `width:${total ? Math.round((r.count / total) * 100) : 0}%` })),
          },
        ],
        rows,
        { cls: "compact", rowAttrs: (r) => ({ dataset: { protocol: r.protocol, count: String(r.count) }, class: r.count ? "" : "zero" }) },
      );
    };
    live(ctx, byProto, loadProtocols, "overview-connections");
    ctx.every(redraw, SAMPLE_MS); // keeps the time axis moving even when a poll fails
  }

  function renderTotals(el, ov) {
    const ot = ov.object_totals || {};
    const qt = ov.queue_totals || {};
    const tile = (label, value, href, id) =>
      h(href ? "a" : "div", { class: "tile", href, dataset: { total: id } }, h("span", { class: "tile-value" }, fmtNum(value || 0)), h("span", { class: "tile-label" }, label));
    setKids(el, 
      h(
        "div",
        { class: "tile-group" },
        tile("Connections", ot.connections, "#/connections", "connections"),
        tile("Channels", ot.channels, "#/channels", "channels"),
        tile("Exchanges", ot.exchanges, "#/exchanges", "exchanges"),
        tile("Queues", ot.queues, "#/queues", "queues"),
        tile("Consumers", ot.consumers, "#/consumers", "consumers"),
      ),
      h(
        "div",
        { class: "tile-group msgs" },
        tile("Messages", qt.messages, null, "messages"),
        tile("Ready", qt.messages_ready, null, "messages_ready"),
        tile("Unacked", qt.messages_unacknowledged, null, "messages_unacknowledged"),
      ),
    );
  }

  function renderNode(el, ov) {
    const version = ov.product_version || ov.rabbitmq_version;
    setKids(el, 
      kvTable([
        ["Node", ov.node],
        ["Cluster", ov.cluster_name],
        ["Product", [ov.product_name || "", version || ""].join(" ").trim()],
        ["Management", ov.management_version],
        ["Compatible with", ov.rabbitmq_version && ov.product_name && ov.product_name !== "RabbitMQ" ? `RabbitMQ ${ov.rabbitmq_version}` : null],
        ["Erlang", ov.product_name === "RabbitMQ" || !ov.product_name ? ov.erlang_version : null],
        ["Rates mode", ov.rates_mode],
      ]),
    );
  }

  function renderListeners(el, ov) {
    const ls = (ov.listeners || []).slice().sort((a, b) => (a.port || 0) - (b.port || 0));
    setKids(el, 
      table(
        [
          { label: "Protocol", render: (l) => l.protocol },
          { label: "Bound to", render: (l) => l.ip_address },
          { label: "Port", cls: "num", render: (l) => String(l.port) },
        ],
        ls,
        { cls: "compact", empty: "No listeners reported.", rowAttrs: (l) => ({ dataset: { protocol: l.protocol } }) },
      ),
    );
  }

  // ---------------------------------------------------------------------
  // Connections, Channels, Consumers
  // ---------------------------------------------------------------------

  function filterBox(placeholder, value, onchange) {
    const input = h("input", { type: "search", class: "filter", placeholder, value, "aria-label": placeholder });
    input.addEventListener("input", debounce(() => onchange(input.value), 200));
    return input;
  }
  const matches = (filter, ...texts) => !filter || texts.some((t) => String(t || "").toLowerCase().includes(filter.toLowerCase()));

  // what the client calls itself: AMQP connection_name, MQTT client id
  function clientName(c) {
    const cp = c.client_properties;
    const n = cp && typeof cp === "object" && !Array.isArray(cp) ? cp.connection_name : null;
    return n || c.client_id || "";
  }

  function pageConnections(ctx, view) {
    let filter = "";
    const count = h("span", { class: "muted count" });
    const body = h("div", { id: "connections" });
    let reload = null;
    const filterInput = filterBox("Filter by name, user, protocol", filter, (v) => ((filter = v), reload()));
    filterInput.id = "connection-filter";
    view.append(
      pageHeader("Connections", count, filterInput),
      body,
    );
    reload = live(ctx, body, async () => {
      const conns = await apiGet("api/connections");
      const rows = conns.filter((c) => matches(filter, c.name, c.user, c.protocol, c.vhost, clientName(c)));
      count.textContent = filter ? `${fmtNum(rows.length)} of ${fmtNum(conns.length)}` : `${fmtNum(conns.length)} total`;
      return table(
        [
          {
            label: "Name",
            render: (c) =>
              h(
                "span",
                { class: "conn-name", title: c.name },
                c.name,
                clientName(c) ? h("span", { class: "muted sub" }, clientName(c)) : null,
              ),
          },
          { label: "Protocol", render: (c) => protoBadge(c.protocol) },
          { label: "User", key: "user" },
          { label: "Vhost", render: (c) => vhostLabel(c.vhost) },
          { label: "Client", render: (c) => (c.peer_host != null ? `${c.peer_host}:${c.peer_port}` : "") },
          { label: "State", render: (c) => stateBadge(c.state) },
          { label: "Channels", cls: "num", render: (c) => fmtNum(c.channels) },
          { label: "From client", cls: "num", render: (c) => fmtBytes(get(c, "recv_oct_details.rate") || 0) + "/s" },
          { label: "To client", cls: "num", render: (c) => fmtBytes(get(c, "send_oct_details.rate") || 0) + "/s" },
          {
            label: "",
            cls: "actions",
            render: (c) =>
              actionButton("Close", "small danger", async () => {
                if (!window.confirm(`Close connection ${c.name}?`)) return;
                await api("DELETE", `api/connections/${enc(c.name)}`);
                info(`Connection ${c.name} closed.`);
                reload();
              }),
          },
        ],
        rows,
        { empty: filter ? "No connection matches the filter." : "No connections.", rowAttrs: (c) => ({ dataset: { name: c.name, protocol: c.protocol } }) },
      );
    });
  }

  function pageChannels(ctx, view) {
    let filter = "";
    const count = h("span", { class: "muted count" });
    const body = h("div", { id: "channels" });
    let reload = null;
    view.append(pageHeader("Channels", count, filterBox("Filter by name or user", filter, (v) => ((filter = v), reload()))), body);
    reload = live(ctx, body, async () => {
      const chans = await apiGet("api/channels");
      const rows = chans.filter((c) => matches(filter, c.name, c.user, c.vhost));
      count.textContent = filter ? `${fmtNum(rows.length)} of ${fmtNum(chans.length)}` : `${fmtNum(chans.length)} total`;
      return table(
        [
          { label: "Channel", render: (c) => h("span", { class: "conn-name", title: c.name }, c.name) },
          { label: "User", key: "user" },
          { label: "Vhost", render: (c) => vhostLabel(c.vhost) },
          {
            label: "Mode",
            render: (c) => frag(c.confirm ? badge("C", "feat", "publisher confirms") : null, c.transactional ? badge("T", "feat", "transactional") : null),
          },
          { label: "State", render: (c) => stateBadge(c.state) },
          { label: "Consumers", cls: "num", render: (c) => fmtNum(c.consumer_count) },
          { label: "Prefetch", cls: "num", render: (c) => fmtNum(c.prefetch_count) },
          { label: "Unacked", cls: "num", render: (c) => fmtNum(c.messages_unacknowledged) },
          { label: "Unconfirmed", cls: "num", render: (c) => fmtNum(c.messages_unconfirmed) },
          { label: "Publish", cls: "num", render: (c) => fmtRate(rateOf(c, "publish") || 0) },
          { label: "Deliver / get", cls: "num", render: (c) => fmtRate(rateOf(c, "deliver_get") || 0) },
          { label: "Ack", cls: "num", render: (c) => fmtRate(rateOf(c, "ack") || 0) },
        ],
        rows,
        { empty: filter ? "No channel matches the filter." : "No channels." },
      );
    });
  }

  function pageConsumers(ctx, view) {
    let filter = "";
    const count = h("span", { class: "muted count" });
    const body = h("div", { id: "consumers" });
    let reload = null;
    view.append(pageHeader("Consumers", count, filterBox("Filter by queue, tag or connection", filter, (v) => ((filter = v), reload()))), body);
    reload = live(ctx, body, async () => {
      const list = await apiGet("api/consumers");
      const rows = list.filter((c) => matches(filter, get(c, "queue.name"), c.consumer_tag, get(c, "channel_details.connection_name"), get(c, "channel_details.name")));
      count.textContent = filter ? `${fmtNum(rows.length)} of ${fmtNum(list.length)}` : `${fmtNum(list.length)} total`;
      return table(
        [
          { label: "Queue", render: (c) => (c.queue ? queueLink(c.queue.vhost, c.queue.name) : "") },
          { label: "Vhost", render: (c) => vhostLabel(get(c, "queue.vhost") || "") },
          { label: "Consumer tag", render: (c) => h("span", { class: "mono clip", title: c.consumer_tag }, c.consumer_tag) },
          { label: "Channel", render: (c) => h("span", { class: "conn-name", title: get(c, "channel_details.name") }, get(c, "channel_details.name") || "") },
          { label: "Ack", render: (c) => (c.ack_required ? "manual" : "auto") },
          { label: "Prefetch", cls: "num", render: (c) => fmtNum(c.prefetch_count) },
          {
            label: "Active",
            render: (c) => frag(c.active === false ? badge("waiting", "state warn") : badge(c.activity_status || "up", "state ok"), c.exclusive ? [" ", badge("Excl", "feat", "exclusive consumer")] : null),
          },
          rows.some((c) => c.arguments && Object.keys(c.arguments).length) ? { label: "Arguments", render: (c) => argsView(c.arguments) } : null,
        ].filter(Boolean),
        rows,
        { empty: filter ? "No consumer matches the filter." : "No consumers." },
      );
    });
  }

  // ---------------------------------------------------------------------
  // Queues (server-side pagination, never fetches all of them)
  // ---------------------------------------------------------------------

  const QUEUE_SORTS = ["name", "messages", "messages_ready", "messages_unacknowledged", "consumers", "message_stats.publish_details.rate"];

  function pageQueues(ctx, view) {
    const q = state.queues;
    if (!QUEUE_SORTS.includes(q.sort)) q.sort = "name";
    const summary = h("span", { class: "muted count", id: "queue-summary" });
    const body = h("div", { id: "queues" });
    const pager = h("div", { class: "pager", id: "queue-pager" });
    let reload = null;
    const setAndReload = (changes) => {
      Object.assign(q, changes);
      saveState();
      reload();
    };

    const filter = h("input", { type: "search", class: "filter", id: "queue-filter", placeholder: "Filter by name", value: q.name, "aria-label": "Filter queues by name" });
    filter.addEventListener("input", debounce(() => setAndReload({ name: filter.value, page: 1 }), 250));
    const regex = h("input", { type: "checkbox", id: "queue-regex", checked: q.regex });
    regex.addEventListener("change", () => setAndReload({ regex: regex.checked, page: 1 }));
    const vsel = vhostSelect(state.vhost, true, (v) => {
      state.vhost = v;
      setAndReload({ page: 1 });
    });

    view.append(
      pageHeader("Queues", summary, vsel, filter, h("label", { class: "check" }, regex, "Regex")),
      body,
      pager,
      addQueuePanel(() => reload()),
    );

    let pageCount = 1;
    reload = live(ctx, body, async () => {
      const params = new URLSearchParams({
        page: String(q.page),
        page_size: String(q.pageSize),
        name: q.name,
        use_regex: String(!!q.regex),
        sort: q.sort,
        sort_reverse: String(!!q.reverse),
        pagination: "true",
      });
      const base = state.vhost ? `api/queues/${enc(state.vhost)}` : "api/queues";
      let res;
      try {
        res = await apiGet(`${base}?${params}`);
      } catch (e) {
        // RabbitMQ answers 400 for a page past the end (the list shrank).
        if (e instanceof ApiError && e.status === 400 && q.page > 1 && /page/i.test(`${e.error} ${e.reason}`)) {
          q.page = 1;
          res = await apiGet(`${base}?${new URLSearchParams({ ...Object.fromEntries(params), page: "1" })}`);
        } else throw e;
      }
      const paged = normalisePage(res, q);
      if (paged.page_count > 0 && q.page > paged.page_count) {
        q.page = paged.page_count;
        setTimeout(reload, 0);
      }
      pageCount = paged.page_count || 1;
      renderPager(pager, paged, (p) => setAndReload({ page: p }), (n) => setAndReload({ pageSize: n, page: 1 }));
      const first = paged.filtered_count ? (paged.page - 1) * paged.page_size + 1 : 0;
      const last = Math.min(paged.filtered_count, first + paged.items.length - 1);
      summary.textContent =
        `${fmtNum(first)}–${fmtNum(last)} of ${fmtNum(paged.filtered_count)}` +
        (paged.filtered_count !== paged.total_count ? ` matching (${fmtNum(paged.total_count)} total)` : "");
      const cols = [];
      if (!state.vhost) cols.push({ label: "Vhost", render: (r) => vhostLabel(r.vhost) });
      cols.push(
        { label: "Name", sort: "name", render: (r) => queueLink(r.vhost, r.name) },
        { label: "Features", title: "type (when not classic), D durable, AD auto-delete, Excl exclusive, Args arguments, policy", render: (r) => features(r, true) },
        { label: "State", render: (r) => stateBadge(r.state) },
        { label: "Ready", cls: "num", sort: "messages_ready", render: (r) => fmtNum(r.messages_ready ?? 0) },
        { label: "Unacked", cls: "num", sort: "messages_unacknowledged", render: (r) => fmtNum(r.messages_unacknowledged ?? 0) },
        { label: "Total", cls: "num", sort: "messages", render: (r) => h("span", { class: "q-messages" }, fmtNum(r.messages ?? 0)) },
        { label: "Consumers", cls: "num", sort: "consumers", render: (r) => fmtNum(r.consumers ?? 0) },
        { label: "Incoming", cls: "num", sort: "message_stats.publish_details.rate", render: (r) => fmtRate(rateOf(r, "publish") || 0) },
        { label: "Deliver", cls: "num", title: "deliver / get rate", render: (r) => fmtRate(rateOf(r, "deliver_get") || 0) },
        { label: "Ack", cls: "num", render: (r) => fmtRate(rateOf(r, "ack") || 0) },
      );
      return table(cols, paged.items, {
        sort: q.sort,
        reverse: q.reverse,
        onSort: (s) => setAndReload(q.sort === s ? { reverse: !q.reverse } : { sort: s, reverse: s !== "name" }),
        empty: q.name ? "No queue matches the filter." : "No queues.",
        rowAttrs: (r) => ({ dataset: { queue: r.name, vhost: r.vhost, messages: String(r.messages ?? 0) } }),
      });
    });
    void pageCount;
  }

  // A server that ignores pagination=true answers with a plain array: page it
  // here so the page still works (it then did fetch everything).
  function normalisePage(res, q) {
    if (!Array.isArray(res)) {
      return {
        items: res.items || [],
        page: res.page || q.page,
        page_count: res.page_count ?? 1,
        page_size: res.page_size || q.pageSize,
        filtered_count: res.filtered_count ?? (res.items || []).length,
        total_count: res.total_count ?? res.filtered_count ?? (res.items || []).length,
      };
    }
    let items = res;
    if (q.name) {
      let re = null;
      if (q.regex) {
        try {
          re = new RegExp(q.name);
        } catch {
          re = null;
        }
      }
      items = items.filter((i) => (re ? re.test(i.name) : i.name.toLowerCase().includes(q.name.toLowerCase())));
    }
    const key = (i) => get(i, q.sort) ?? (q.sort === "name" ? "" : 0);
    items = items.slice().sort((a, b) => {
      const x = key(a);
      const y = key(b);
      const c = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return q.reverse ? -c : c;
    });
    const pageCount = Math.max(1, Math.ceil(items.length / q.pageSize));
    const page = Math.min(q.page, pageCount);
    return {
      items: items.slice((page - 1) * q.pageSize, page * q.pageSize),
      page,
      page_count: pageCount,
      page_size: q.pageSize,
      filtered_count: items.length,
      total_count: res.length,
    };
  }

  function renderPager(el, p, goTo, setSize) {
    const pc = Math.max(1, p.page_count || 1);
    const btn = (label, page, title) => h("button", { type: "button", class: "btn small", disabled: page < 1 || page > pc || page === p.page, title, onclick: () => goTo(page) }, label);
    const pageInput = h("input", { type: "number", min: 1, max: pc, value: p.page, class: "page-input", "aria-label": "Page" });
    pageInput.addEventListener("change", () => {
      const n = Math.min(pc, Math.max(1, parseInt(pageInput.value, 10) || 1));
      goTo(n);
    });
    const size = select([20, 50, 100, 200, 500].map((n) => [String(n), `${n} per page`]), String(p.page_size), { "aria-label": "Page size" });
    size.addEventListener("change", () => setSize(Number(size.value)));
    setKids(el, 
      btn("«", 1, "First page"),
      btn("‹", p.page - 1, "Previous page"),
      h("span", { class: "page-of" }, "Page ", pageInput, ` of ${fmtNum(pc)}`),
      btn("›", p.page + 1, "Next page"),
      btn("»", pc, "Last page"),
      size,
    );
  }

  function addQueuePanel(onDone) {
    const vsel = vhostSelect(defaultVhost(), false);
    const name = h("input", { name: "name", required: true, placeholder: "queue name", autocomplete: "off", id: "new-queue-name" });
    const durable = select([["true", "Durable"], ["false", "Transient"]], "true");
    const autoDelete = select([["false", "No"], ["true", "Yes"]], "false");
    const args = h("textarea", { rows: 2, placeholder: "x-message-ttl=60000\nx-max-length=1000", class: "kv-input" });
    const form = asyncForm(
      { id: "add-queue" },
      [
        field("Virtual host", vsel),
        field("Name", name),
        field("Durability", durable),
        field("Auto delete", autoDelete),
        field("Arguments", args, "key=value, one per line (numbers and true/false are typed)"),
        h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn primary" }, "Add queue")),
      ],
      async () => {
        const n = name.value.trim();
        if (!n) throw new Error("The queue needs a name.");
        const body = { durable: durable.value === "true", auto_delete: autoDelete.value === "true", arguments: parseKV(args.value, "Arguments") };
        await api("PUT", `api/queues/${enc(vsel.value)}/${enc(n)}`, body);
        info(`Queue ${n} declared in vhost ${vhostLabel(vsel.value)}.`);
        name.value = "";
        onDone();
      },
    );
    return h("details", { class: "panel fold" }, h("summary", null, "Add a queue"), form);
  }

  // ---------------------------------------------------------------------
  // Queue detail
  // ---------------------------------------------------------------------

  function pageQueue(ctx, view, vhost, name) {
    const qpath = `api/queues/${enc(vhost)}/${enc(name)}`;
    const stats = h("div", { id: "queue-stats" });
    const consumers = h("div", { id: "queue-consumers" });
    const bindings = h("div", { id: "queue-bindings" });
    const getResult = h("div", { id: "get-result" });
    let reloadBindings = null;
    let reloadStats = null;

    view.append(
      pageHeader(
        h("span", null, h("span", { class: "muted kind" }, "Queue "), h("span", { id: "queue-name" }, name)),
        h("span", { class: "muted" }, "vhost ", h("b", null, vhostLabel(vhost))),
        h("a", { href: "#/queues", class: "btn ghost" }, "← All queues"),
      ),
      stats,
      h("div", { class: "cols-2" }, panel("Bindings", bindings, bindQueueForm(vhost, name, () => reloadBindings())), panel("Consumers", consumers)),
      h(
        "div",
        { class: "cols-2" },
        panel("Get messages", getForm(qpath, getResult, () => reloadStats()), getResult),
        panel("Publish message", publishForm(vhost, "", name, () => reloadStats(), { fixedKey: true, id: "queue-publish" })),
      ),
      panel(
        "Purge and delete",
        h(
          "div",
          { class: "danger-zone" },
          actionButton("Purge messages", "danger", async () => {
            if (!window.confirm(`Purge all ready messages of queue ${name}?`)) return;
            await api("DELETE", `${qpath}/contents`);
            info(`Queue ${name} purged.`);
            reloadStats();
          }, { id: "purge-queue" }),
          actionButton("Delete queue", "danger", async () => {
            if (!window.confirm(`Delete queue ${name} in vhost ${vhostLabel(vhost)}?`)) return;
            await api("DELETE", qpath);
            flash("info", `Queue ${name} deleted.`);
            location.hash = "#/queues";
          }, { id: "delete-queue" }),
          h("span", { class: "hint" }, "Purge removes ready messages; delete removes the queue, its bindings and messages."),
        ),
      ),
    );

    reloadStats = live(ctx, stats, async () => {
      const qd = await apiGet(qpath);
      setKids(consumers, 
        table(
          [
            { label: "Channel", render: (c) => h("span", { class: "conn-name", title: get(c, "channel_details.name") }, get(c, "channel_details.name") || "") },
            { label: "Consumer tag", render: (c) => h("span", { class: "mono clip", title: c.consumer_tag }, c.consumer_tag) },
            { label: "Ack", render: (c) => (c.ack_required ? "manual" : "auto") },
            { label: "Prefetch", cls: "num", render: (c) => fmtNum(c.prefetch_count) },
            { label: "Active", render: (c) => (c.active === false ? "waiting" : "yes") },
          ],
          qd.consumer_details || [],
          { cls: "compact", empty: qd.consumers ? `${fmtNum(qd.consumers)} consumer(s); no details reported.` : "No consumers." },
        ),
      );
      return h(
        "div",
        { class: "cols-3 stats" },
        panel(
          "Details",
          kvTable([
            ["Type", qd.type || "classic"],
            ["Features", features(qd)],
            ["State", stateBadge(qd.state)],
            ["Policy", qd.policy || ""],
            ["Effective policy", qd.effective_policy_definition && Object.keys(qd.effective_policy_definition).length ? argsView(qd.effective_policy_definition) : ""],
            ["Exclusive owner", qd.owner_pid_details ? qd.owner_pid_details.name : ""],
            ["Node", qd.node],
            ["Arguments", argsView(qd.arguments)],
          ]),
        ),
        panel(
          "Messages",
          kvTable([
            ["Total", h("span", { id: "queue-messages" }, fmtNum(qd.messages ?? 0))],
            ["Ready", fmtNum(qd.messages_ready ?? 0)],
            ["Unacked", fmtNum(qd.messages_unacknowledged ?? 0)],
            ["Bytes", qd.message_bytes != null ? fmtBytes(qd.message_bytes) : ""],
            ["Persistent", qd.messages_persistent != null ? fmtNum(qd.messages_persistent) : ""],
            ["Consumers", fmtNum(qd.consumers ?? 0)],
            ["Consumer utilisation", qd.consumer_utilisation != null ? `${Math.round(qd.consumer_utilisation * 100)}%` : ""],
          ]),
        ),
        panel(
          "Rates",
          kvTable([
            ["Publish", fmtRate(rateOf(qd, "publish") || 0)],
            ["Deliver / get", fmtRate(rateOf(qd, "deliver_get") || 0)],
            ["Ack", fmtRate(rateOf(qd, "ack") || 0)],
            ["Redeliver", fmtRate(rateOf(qd, "redeliver") || 0)],
            ["Memory", qd.memory != null ? fmtBytes(qd.memory) : ""],
          ]),
        ),
      );
    }, "queue");

    reloadBindings = live(ctx, bindings, async () => {
      const list = await apiGet(`${qpath}/bindings`);
      return bindingTable(list, "queue", vhost, () => reloadBindings());
    }, "queue-bindings");
  }

  function getForm(qpath, out, after) {
    const count = h("input", { type: "number", min: 1, max: 1000, value: 1, class: "narrow", id: "get-count" });
    const ack = select(
      [
        ["ack_requeue_true", "Nack, requeue (message stays)"],
        ["ack_requeue_false", "Ack, remove from queue"],
        ["reject_requeue_true", "Reject, requeue"],
      ],
      "ack_requeue_true",
      { id: "get-ackmode" },
    );
    const encoding = select([["auto", "Auto string / base64"], ["base64", "base64"]], "auto");
    return asyncForm(
      { id: "get-messages" },
      [
        field("Ack mode", ack),
        field("Encoding", encoding),
        field("Messages", count),
        h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn primary" }, "Get messages")),
      ],
      async () => {
        const n = Math.max(1, parseInt(count.value, 10) || 1);
        const msgs = await api("POST", `${qpath}/get`, { count: n, ackmode: ack.value, encoding: encoding.value, truncate: 50000 });
        setKids(out, renderMessages(msgs || []));
        out.dataset.state = "loaded";
        after();
      },
    );
  }

  function renderMessages(msgs) {
    if (!msgs.length) return h("p", { class: "empty-note", id: "get-empty" }, "Queue is empty.");
    return h(
      "div",
      { class: "messages-list" },
      msgs.map((m, i) =>
        h(
          "div",
          { class: "message", dataset: { index: String(i + 1) } },
          h(
            "div",
            { class: "message-head" },
            h("b", null, `Message ${i + 1}`),
            m.message_count != null ? h("span", { class: "muted" }, ` · ${fmtNum(m.message_count)} remaining in the queue`) : null,
            m.redelivered ? badge("redelivered", "state warn") : null,
          ),
          kvTable([
            ["Exchange", exchangeLabel(m.exchange ?? "")],
            ["Routing key", h("span", { class: "mono routing-key" }, m.routing_key ?? "")],
            ["Properties", propsView(m.properties)],
            ["Payload", h("span", { class: "muted" }, `${fmtNum(m.payload_bytes ?? (m.payload || "").length)} bytes, encoding ${m.payload_encoding || "string"}`)],
          ]),
          h("pre", { class: "payload" }, m.payload ?? ""),
        ),
      ),
    );
  }

  function propsView(props) {
    if (!props || typeof props !== "object" || (Array.isArray(props) && !props.length) || !Object.keys(props).length) return h("span", { class: "muted" }, "none");
    return h(
      "span",
      { class: "props" },
      Object.entries(props).map(([k, v]) =>
        h(
          "span",
          { class: "prop" },
          h("span", { class: "arg-k" }, k),
          ": ",
          k === "headers" && v && typeof v === "object" ? argsView(v) : jsonText(v),
        ),
      ),
    );
  }

  // publish to vhost/exchange; fixedKey: the routing key is the queue name
  function publishForm(vhost, exchange, routingKey, after, opts = {}) {
    const key = h("input", { value: routingKey, placeholder: "routing key", autocomplete: "off", readonly: opts.fixedKey || null });
    const mode = select([["1", "1 – non-persistent"], ["2", "2 – persistent"]], "1");
    const headers = h("textarea", { rows: 2, class: "kv-input", placeholder: "header=value" });
    const props = h("textarea", { rows: 2, class: "kv-input", placeholder: "content_type=text/plain\ncorrelation_id=abc" });
    const payload = h("textarea", { rows: 4, class: "payload-input", placeholder: "payload", id: opts.id ? `${opts.id}-payload` : undefined });
    const result = h("div", { class: "publish-result", id: opts.id ? `${opts.id}-result` : undefined, "aria-live": "polite" });
    const form = asyncForm(
      { id: opts.id || undefined },
      [
        field("Routing key", key, opts.fixedKey ? "via the default exchange, straight to this queue" : null),
        field("Delivery mode", mode),
        field("Headers", headers),
        field("Properties", props),
        field("Payload", payload),
        h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn primary" }, "Publish message"), result),
      ],
      async () => {
        const properties = parseKV(props.value, "Properties");
        properties.delivery_mode = Number(mode.value);
        const hdrs = parseKV(headers.value, "Headers");
        if (Object.keys(hdrs).length) properties.headers = hdrs;
        const body = { properties, routing_key: key.value, payload: payload.value, payload_encoding: "string" };
        result.replaceChildren();
        const res = await api("POST", `api/exchanges/${enc(vhost)}/${enc(exchangeSeg(exchange))}/publish`, body);
        if (res && res.routed) {
          setKids(result, h("span", { class: "ok-text", dataset: { routed: "true" } }, "✓ Message published and routed."));
          info("Message published.");
        } else {
          setKids(result, h("span", { class: "warn-text", dataset: { routed: "false" } }, "Message published, but not routed to any queue."));
          warn("Message published, but not routed.");
        }
        after();
      },
    );
    return form;
  }

  // bindings: list of binding objects; side: "queue" (shown on a queue) or
  // "source"/"destination" (shown on an exchange)
  function bindingTable(list, side, vhost, reload) {
    const cols = [];
    if (side !== "source") cols.push({ label: "From", render: (b) => (b.source === "" ? h("span", { class: "muted" }, "(default exchange)") : exchangeLink(b.vhost || vhost, b.source)) });
    if (side !== "queue" && side !== "destination") {
      cols.push({
        label: "To",
        render: (b) =>
          frag(
            badge(b.destination_type === "exchange" ? "exchange" : "queue", "kind-badge"),
            " ",
            b.destination_type === "exchange" ? exchangeLink(b.vhost || vhost, b.destination) : queueLink(b.vhost || vhost, b.destination),
          ),
      });
    }
    cols.push(
      { label: "Routing key", render: (b) => h("span", { class: "mono" }, b.routing_key) },
      { label: "Arguments", render: (b) => argsView(b.arguments) },
      {
        label: "",
        cls: "actions",
        render: (b) =>
          b.source === ""
            ? ""
            : actionButton("Unbind", "small danger", async () => {
                const dt = b.destination_type === "exchange" ? "e" : "q";
                const pk = b.properties_key ?? "~";
                await api("DELETE", `api/bindings/${enc(b.vhost || vhost)}/e/${enc(b.source)}/${dt}/${enc(b.destination)}/${enc(pk)}`);
                info(`Binding ${b.source} → ${b.destination} (${b.routing_key || "no key"}) removed.`);
                reload();
              }),
      },
    );
    return table(cols, list || [], {
      cls: "compact",
      empty: "No bindings.",
      rowAttrs: (b) => ({ dataset: { source: b.source, destination: b.destination, key: b.routing_key } }),
    });
  }

  function bindQueueForm(vhost, queue, after) {
    const source = h("input", { placeholder: "exchange", list: "exchange-names", autocomplete: "off", required: true });
    const key = h("input", { placeholder: "routing key", autocomplete: "off" });
    const args = h("textarea", { rows: 1, class: "kv-input", placeholder: "key=value" });
    const names = h("datalist", { id: "exchange-names" });
    apiGet(`api/exchanges/${enc(vhost)}`)
      .then((list) => setKids(names, ...list.filter((e) => e.name !== "").map((e) => h("option", { value: e.name }))))
      .catch(() => {});
    return h(
      "details",
      { class: "fold inner" },
      h("summary", null, "Add binding to this queue"),
      asyncForm(null, [names, field("From exchange", source), field("Routing key", key), field("Arguments", args), h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn primary" }, "Bind"))], async () => {
        const src = source.value.trim();
        if (!src) throw new Error("Name the exchange to bind from.");
        await api("POST", `api/bindings/${enc(vhost)}/e/${enc(src)}/q/${enc(queue)}`, { routing_key: key.value, arguments: parseKV(args.value, "Arguments") });
        info(`Bound ${queue} to ${src} with key ${key.value || "(empty)"}.`);
        key.value = "";
        after();
      }),
    );
  }

  // ---------------------------------------------------------------------
  // Exchanges
  // ---------------------------------------------------------------------

  function pageExchanges(ctx, view) {
    const count = h("span", { class: "muted count" });
    const body = h("div", { id: "exchanges" });
    let reload = null;
    const vsel = vhostSelect(state.vhost, true, (v) => {
      state.vhost = v;
      saveState();
      reload();
    });
    const filter = filterBox("Filter by name", state.exchangesFilter, (v) => {
      state.exchangesFilter = v;
      saveState();
      reload();
    });
    view.append(pageHeader("Exchanges", count, vsel, filter), body, addExchangePanel(() => reload()));
    reload = live(ctx, body, async () => {
      const list = await apiGet(state.vhost ? `api/exchanges/${enc(state.vhost)}` : "api/exchanges");
      const f = state.exchangesFilter;
      const rows = (Array.isArray(list) ? list : list.items || []).filter((e) => matches(f, exchangeLabel(e.name)));
      count.textContent = f ? `${fmtNum(rows.length)} of ${fmtNum(list.length)}` : `${fmtNum(rows.length)} total`;
      const cols = [];
      if (!state.vhost) cols.push({ label: "Vhost", render: (e) => vhostLabel(e.vhost) });
      cols.push(
        { label: "Name", render: (e) => exchangeLink(e.vhost, e.name) },
        { label: "Type", render: (e) => badge(e.type, `xtype x-${e.type}`) },
        { label: "Features", render: features },
        { label: "Rate in", cls: "num", render: (e) => fmtRate(rateOf(e, "publish_in") || 0) },
        { label: "Rate out", cls: "num", render: (e) => fmtRate(rateOf(e, "publish_out") || 0) },
        {
          label: "",
          cls: "actions",
          render: (e) =>
            e.name === "" || e.name.startsWith("amq.")
              ? ""
              : actionButton("Delete", "small danger", async () => {
                  if (!window.confirm(`Delete exchange ${e.name} in vhost ${vhostLabel(e.vhost)}?`)) return;
                  await api("DELETE", `api/exchanges/${enc(e.vhost)}/${enc(e.name)}`);
                  info(`Exchange ${e.name} deleted.`);
                  reload();
                }),
        },
      );
      return table(cols, rows, { empty: "No exchanges.", rowAttrs: (e) => ({ dataset: { exchange: e.name, vhost: e.vhost } }) });
    });
  }

  const EXCHANGE_TYPES = ["direct", "fanout", "topic", "headers"];

  function addExchangePanel(onDone) {
    const vsel = vhostSelect(defaultVhost(), false);
    const name = h("input", { required: true, placeholder: "exchange name", autocomplete: "off" });
    const types = (lastOverview && lastOverview.exchange_types ? lastOverview.exchange_types.map((t) => t.name) : EXCHANGE_TYPES).slice();
    const type = select(types, types.includes("direct") ? "direct" : types[0]);
    const durable = select([["true", "Durable"], ["false", "Transient"]], "true");
    const autoDelete = select([["false", "No"], ["true", "Yes"]], "false");
    const internal = select([["false", "No"], ["true", "Yes"]], "false");
    const args = h("textarea", { rows: 2, class: "kv-input", placeholder: "alternate-exchange=unrouted" });
    const form = asyncForm(
      { id: "add-exchange" },
      [
        field("Virtual host", vsel),
        field("Name", name),
        field("Type", type),
        field("Durability", durable),
        field("Auto delete", autoDelete),
        field("Internal", internal),
        field("Arguments", args, "key=value, one per line"),
        h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn primary" }, "Add exchange")),
      ],
      async () => {
        const n = name.value.trim();
        if (!n) throw new Error("The exchange needs a name.");
        await api("PUT", `api/exchanges/${enc(vsel.value)}/${enc(n)}`, {
          type: type.value,
          durable: durable.value === "true",
          auto_delete: autoDelete.value === "true",
          internal: internal.value === "true",
          arguments: parseKV(args.value, "Arguments"),
        });
        info(`Exchange ${n} declared in vhost ${vhostLabel(vsel.value)}.`);
        name.value = "";
        onDone();
      },
    );
    return h("details", { class: "panel fold" }, h("summary", null, "Add an exchange"), form);
  }

  function pageExchange(ctx, view, vhost, seg) {
    const name = seg === "amq.default" ? "" : seg;
    const xpath = `api/exchanges/${enc(vhost)}/${enc(exchangeSeg(name))}`;
    const info_ = h("div", { id: "exchange-info" });
    const src = h("div", { id: "exchange-bindings" });
    const dst = h("div", { id: "exchange-bindings-in" });
    let reloadSrc = null;
    let reloadDst = null;
    view.append(
      pageHeader(
        h("span", null, h("span", { class: "muted kind" }, "Exchange "), h("span", { id: "exchange-name" }, exchangeLabel(name))),
        h("span", { class: "muted" }, "vhost ", h("b", null, vhostLabel(vhost))),
        h("a", { href: "#/exchanges", class: "btn ghost" }, "← All exchanges"),
      ),
      info_,
    );
    const publish = panel("Publish message", publishForm(vhost, name, "", () => {}, { id: "exchange-publish" }));
    if (name === "") {
      view.append(
        h(
          "div",
          { class: "cols-2" },
          panel("Bindings", h("p", { class: "muted" }, "The default exchange is implicitly bound to every queue, with the queue's name as the routing key; it cannot be bound or unbound.")),
          publish,
        ),
      );
    } else {
      view.append(
        h(
          "div",
          { class: "cols-2" },
          panel("Bindings from this exchange", src, bindFromExchangeForm(vhost, name, () => reloadSrc())),
          h("div", null, panel("Bindings to this exchange", dst), publish),
        ),
      );
    }
    if (name !== "" && !name.startsWith("amq.")) {
      view.append(
        panel(
          "Delete",
          h(
            "div",
            { class: "danger-zone" },
            actionButton("Delete exchange", "danger", async () => {
              if (!window.confirm(`Delete exchange ${name} in vhost ${vhostLabel(vhost)}?`)) return;
              await api("DELETE", xpath);
              flash("info", `Exchange ${name} deleted.`);
              location.hash = "#/exchanges";
            }),
          ),
        ),
      );
    }
    live(ctx, info_, async () => {
      const x = await apiGet(xpath);
      return h(
        "div",
        { class: "cols-2 stats" },
        panel("Details", kvTable([["Type", badge(x.type, `xtype x-${x.type}`)], ["Features", features(x)], ["Policy", x.policy || ""], ["Arguments", argsView(x.arguments)]])),
        panel("Rates", kvTable([["Publish in", fmtRate(rateOf(x, "publish_in") || 0)], ["Publish out", fmtRate(rateOf(x, "publish_out") || 0)]])),
      );
    }, "exchange");
    if (name !== "") {
      reloadSrc = live(ctx, src, async () => bindingTable(await apiGet(`${xpath}/bindings/source`), "source", vhost, () => reloadSrc()), "exchange-src");
      reloadDst = live(ctx, dst, async () => bindingTable(await apiGet(`${xpath}/bindings/destination`), "destination", vhost, () => reloadDst()), "exchange-dst");
    }
  }

  function bindFromExchangeForm(vhost, exchange, after) {
    const dtype = select([["q", "Queue"], ["e", "Exchange"]], "q");
    const dest = h("input", { required: true, placeholder: "destination name", autocomplete: "off", id: "binding-destination" });
    const key = h("input", { placeholder: "routing key", autocomplete: "off", id: "binding-key" });
    const args = h("textarea", { rows: 1, class: "kv-input", placeholder: "key=value (headers exchanges: x-match=all)" });
    return h(
      "details",
      { class: "fold inner", open: true },
      h("summary", null, "Add binding from this exchange"),
      asyncForm({ id: "add-binding" }, [field("To", h("span", { class: "inline" }, dtype, dest)), field("Routing key", key), field("Arguments", args), h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn primary" }, "Bind"))], async () => {
        const d = dest.value.trim();
        if (!d) throw new Error("Name the queue or exchange to bind to.");
        await api("POST", `api/bindings/${enc(vhost)}/e/${enc(exchange)}/${dtype.value}/${enc(d)}`, { routing_key: key.value, arguments: parseKV(args.value, "Arguments") });
        info(`Bound ${dtype.value === "q" ? "queue" : "exchange"} ${d} to ${exchange} with key ${key.value || "(empty)"}.`);
        dest.value = "";
        key.value = "";
        after();
      }),
    );
  }

  // ---------------------------------------------------------------------
  // Route tester (Switchyard's own: POST api/switchyard/route)
  // ---------------------------------------------------------------------

  function pageRoute(ctx, view) {
    const r = state.route;
    const out = h("div", { id: "route-result", class: "route-result" });
    const vsel = vhostSelect(defaultVhost(), false);
    const modes = [
      ["exchange", "AMQP"],
      ["mqtt", "MQTT"],
      ["stomp", "STOMP"],
    ];
    const modeInputs = modes.map(([v, label]) =>
      h("label", { class: "seg", title: { exchange: "An AMQP publish: exchange, routing key, headers", mqtt: "An MQTT PUBLISH to a topic", stomp: "A STOMP SEND to a destination" }[v] }, h("input", { type: "radio", name: "route-mode", value: v, checked: r.mode === v }), label),
    );
    const exchange = h("input", { id: "route-exchange", list: "route-exchanges", value: r.exchange, placeholder: "amq.topic", autocomplete: "off" });
    const names = h("datalist", { id: "route-exchanges" });
    const key = h("input", { id: "route-key", value: r.routingKey, placeholder: "plant.7.temp", autocomplete: "off" });
    const headers = h("textarea", { id: "route-headers", rows: 2, class: "kv-input", value: r.headers, placeholder: "x-sensor=temp\nsite=7" });
    const mqtt = h("input", { id: "route-mqtt", value: r.mqtt, placeholder: "plant/7/temp", autocomplete: "off" });
    const stomp = h("input", { id: "route-stomp", value: r.stomp, placeholder: "/topic/plant.7.temp", autocomplete: "off" });
    const exRows = h("div", { class: "mode-fields", dataset: { mode: "exchange" } }, field("Exchange", exchange, "empty or amq.default: the default exchange"), field("Routing key", key), field("Headers", headers, "key=value, one per line; for headers exchanges"));
    const mqRows = h("div", { class: "mode-fields", dataset: { mode: "mqtt" } }, field("MQTT topic", mqtt, "as an MQTT client would publish it: levels separated by /"));
    const stRows = h("div", { class: "mode-fields", dataset: { mode: "stomp" } }, field("STOMP destination", stomp, "/topic/…, /exchange/…/…, /queue/…, /amq/queue/…"));
    const sync = () => {
      const m = (modeInputs.map((l) => l.querySelector("input")).find((i) => i.checked) || {}).value || "exchange";
      r.mode = m;
      for (const rows of [exRows, mqRows, stRows]) rows.hidden = rows.dataset.mode !== m;
    };
    modeInputs.forEach((l) => l.querySelector("input").addEventListener("change", sync));
    sync();
    const loadNames = () =>
      apiGet(`api/exchanges/${enc(vsel.value)}`)
        .then((list) => setKids(names, ...list.map((e) => h("option", { value: exchangeSeg(e.name) }, e.type))))
        .catch(() => {});
    vsel.addEventListener("change", loadNames);
    loadNames();

    const form = asyncForm(
      { id: "route-form" },
      [
        names,
        field("Virtual host", vsel),
        h("div", { class: "segmented", role: "radiogroup", "aria-label": "Message from" }, modeInputs),
        exRows,
        mqRows,
        stRows,
        h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn primary", id: "route-submit" }, "Test route")),
      ],
      async () => {
        Object.assign(r, { exchange: exchange.value, routingKey: key.value, headers: headers.value, mqtt: mqtt.value, stomp: stomp.value });
        saveState();
        const body = { vhost: vsel.value };
        if (r.mode === "exchange") {
          body.exchange = exchange.value.trim() === "amq.default" ? "" : exchange.value.trim();
          body.routing_key = key.value;
          const hdrs = parseKV(headers.value, "Headers");
          if (Object.keys(hdrs).length) body.headers = hdrs;
        } else if (r.mode === "mqtt") {
          if (!mqtt.value) throw new Error("Enter an MQTT topic.");
          body.mqtt_topic = mqtt.value;
        } else {
          if (!stomp.value) throw new Error("Enter a STOMP destination.");
          body.stomp_destination = stomp.value;
        }
        out.dataset.state = "loading";
        setKids(out, h("p", { class: "muted" }, "Asking the broker…"));
        try {
          const res = await api("POST", "api/switchyard/route", body);
          setKids(out, renderRoutes(res, body));
          out.dataset.state = "loaded";
        } catch (e) {
          out.dataset.state = "error";
          setKids(out, 
            h("div", { class: "route-error", role: "alert" }, h("b", null, "The broker could not test this route"), h("div", null, errorText(e))),
          );
          throw e;
        }
      },
    );

    view.append(
      pageHeader("Route tester", h("span", { class: "muted" }, "Where would a message go? Nothing is published.")),
      h("div", { class: "route-layout" }, panel("Message", form), h("div", { class: "route-out" }, out)),
    );
    out.append(h("p", { class: "muted empty-note" }, "Describe a message on the left: the broker answers with every queue it would reach, through which bindings, and the consumers that would get it."));
  }

  function renderRoutes(res, asked) {
    const routes = (res && res.routes) || [];
    const consumers = routes.reduce((n, r) => n + ((r.consumers || []).length), 0);
    const heads = [];
    if (asked.mqtt_topic != null) heads.push(h("span", null, "MQTT topic ", h("code", null, asked.mqtt_topic), " → "));
    if (asked.stomp_destination != null) heads.push(h("span", null, "STOMP destination ", h("code", null, asked.stomp_destination), " → "));
    heads.push(
      h("span", null, "exchange ", h("code", null, exchangeLabel(res.exchange ?? asked.exchange ?? "")), " with routing key ", h("code", null, res.routing_key ?? asked.routing_key ?? "")),
    );
    const summary = h("div", { class: "route-summary" }, heads);
    const alternates = (res && Array.isArray(res.alternate_exchanges) ? res.alternate_exchanges : []).map((a) => (typeof a === "string" ? a : a && a.name ? a.name : jsonText(a)));
    if (alternates.length) summary.append(h("div", { class: "muted" }, "Through alternate exchange", alternates.length > 1 ? "s " : " ", alternates.map((a, i) => [i ? ", " : "", h("code", null, a)])));
    if (res.unroutable || !routes.length) {
      return frag(
        summary,
        h(
          "div",
          { class: "unroutable", id: "route-unroutable", role: "status" },
          h("b", null, "Unroutable"),
          h("span", null, " — no binding matches: the message would be dropped (or returned to a publisher that set mandatory)."),
        ),
      );
    }
    summary.append(h("span", { class: "route-count" }, ` — ${routes.length} queue${routes.length === 1 ? "" : "s"}, ${consumers} consumer${consumers === 1 ? "" : "s"}`));
    return frag(
      summary,
      routes.map((rt) =>
        h(
          "section",
          { class: "route", dataset: { queue: rt.queue, vhost: rt.vhost || asked.vhost } },
          h("div", { class: "route-head" }, badge("queue", "kind-badge"), " ", queueLink(rt.vhost || asked.vhost, rt.queue)),
          h("div", { class: "chain" }, chainView(rt, asked)),
          (rt.path || [])
            .filter((b) => b.arguments && Object.keys(b.arguments).length)
            .map((b) => h("div", { class: "hop-args-line" }, "binding ", h("b", null, exchangeLabel(b.source)), " → ", h("b", null, b.destination), ": ", argsView(b.arguments))),
          rt.consumers && rt.consumers.length
            ? table(
                [
                  { label: "Protocol", render: (c) => protoBadge(c.protocol) },
                  {
                    label: "Kind",
                    render: (c) => h("span", { class: "consumer-kind" }, c.kind || "", c.client_id ? h("span", { class: "muted sub", title: "MQTT client id" }, `client ${c.client_id}`) : null),
                  },
                  { label: "Connection", render: (c) => h("span", { class: "conn-name", title: c.user ? `${c.connection} (user ${c.user})` : c.connection }, c.connection || "") },
                  { label: "Consumer tag", render: (c) => h("span", { class: "mono clip", title: c.consumer_tag || "" }, c.consumer_tag || "") },
                ],
                rt.consumers,
                { cls: "compact consumers", rowAttrs: (c) => ({ dataset: { kind: c.kind || "", protocol: c.protocol || "" } }) },
              )
            : h("p", { class: "muted no-consumers" }, "No consumer: the message would wait in the queue."),
        ),
      ),
    );
  }

  function chainView(rt, asked) {
    const vhost = rt.vhost || asked.vhost;
    const path = rt.path || [];
    const nodes = [];
    const node = (kind, name) =>
      h("span", { class: `hop-node ${kind}` }, h("span", { class: "hop-kind" }, kind), kind === "queue" ? queueLink(vhost, name) : exchangeLink(vhost, name));
    if (!path.length) return node("queue", rt.queue);
    nodes.push(node("exchange", path[0].source));
    for (const b of path) {
      nodes.push(
        h(
          "span",
          { class: "hop-edge", title: Object.keys(b.arguments || {}).length ? JSON.stringify(b.arguments) : "binding" },
          h("span", { class: "hop-key" }, b.routing_key === "" ? "(empty key)" : b.routing_key),
          h("span", { class: "hop-arrow" }, "→"),
        ),
      );
      nodes.push(node(b.destination_type === "exchange" ? "exchange" : "queue", b.destination));
    }
    return nodes;
  }

  // ---------------------------------------------------------------------
  // Users, vhosts, permissions, policies
  // ---------------------------------------------------------------------

  function pageUsers(ctx, view) {
    const body = h("div", { id: "users" });
    let reload = null;
    const name = h("input", { required: true, autocomplete: "off", placeholder: "username" });
    const pass = h("input", { type: "password", autocomplete: "new-password", placeholder: "password" });
    const tags = h("input", { placeholder: "administrator", autocomplete: "off" });
    const tagButtons = ["administrator", "monitoring", "policymaker", "management", "none"].map((t) =>
      h("button", { type: "button", class: "btn small ghost", onclick: () => (tags.value = t === "none" ? "" : t) }, t === "none" ? "None" : t),
    );
    const form = asyncForm(
      { id: "add-user" },
      [field("Username", name), field("Password", pass), field("Tags", tags, h("span", { class: "tag-picks" }, "Set: ", tagButtons)), h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn primary" }, "Add / update user"))],
      async () => {
        const n = name.value.trim();
        if (!n) throw new Error("The user needs a name.");
        if (!pass.value) throw new Error("Give the user a password.");
        await api("PUT", `api/users/${enc(n)}`, { password: pass.value, tags: tags.value.trim() });
        info(`User ${n} saved.`);
        name.value = "";
        pass.value = "";
        reload();
      },
    );
    view.append(pageHeader("Users"), body, h("details", { class: "panel fold", open: true }, h("summary", null, "Add a user"), form));
    reload = live(ctx, body, async () => {
      const users = await apiGet("api/users");
      const perms = await apiGet("api/permissions").catch(() => []);
      const vhostsOf = new Map();
      for (const p of perms) vhostsOf.set(p.user, [...(vhostsOf.get(p.user) || []), p.vhost]);
      return table(
        [
          { label: "Name", render: (u) => h("b", null, u.name) },
          { label: "Tags", render: (u) => h("span", { class: "tags" }, tagsOf(u.tags).map((t) => badge(t, "tag"))) },
          { label: "Can access virtual hosts", render: (u) => ((vhostsOf.get(u.name) || []).length ? (vhostsOf.get(u.name) || []).map(vhostLabel).join(", ") : h("span", { class: "muted" }, "no access")) },
          {
            label: "",
            cls: "actions",
            render: (u) =>
              actionButton("Delete", "small danger", async () => {
                if (u.name === (whoami && whoami.name) && !window.confirm(`You are logged in as ${u.name}. Delete this user anyway?`)) return;
                if (u.name !== (whoami && whoami.name) && !window.confirm(`Delete user ${u.name}?`)) return;
                await api("DELETE", `api/users/${enc(u.name)}`);
                info(`User ${u.name} deleted.`);
                reload();
              }),
          },
        ],
        users,
        { empty: "No users.", rowAttrs: (u) => ({ dataset: { user: u.name } }) },
      );
    });
  }

  function pageVhosts(ctx, view) {
    const body = h("div", { id: "vhosts" });
    let reload = null;
    const name = h("input", { required: true, autocomplete: "off", placeholder: "name" });
    const desc = h("input", { autocomplete: "off", placeholder: "optional" });
    const tags = h("input", { autocomplete: "off", placeholder: "optional, comma separated" });
    const form = asyncForm(
      { id: "add-vhost" },
      [field("Name", name), field("Description", desc), field("Tags", tags), h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn primary" }, "Add virtual host"))],
      async () => {
        const n = name.value.trim();
        if (!n) throw new Error("The virtual host needs a name.");
        const body_ = {};
        if (desc.value.trim()) body_.description = desc.value.trim();
        if (tags.value.trim()) body_.tags = tags.value.trim();
        await api("PUT", `api/vhosts/${enc(n)}`, body_);
        forgetVhosts();
        info(`Virtual host ${n} added.`);
        name.value = "";
        desc.value = "";
        tags.value = "";
        reload();
      },
    );
    view.append(pageHeader("Virtual hosts"), body, h("details", { class: "panel fold", open: true }, h("summary", null, "Add a virtual host"), form));
    reload = live(ctx, body, async () => {
      const list = await apiGet("api/vhosts");
      return table(
        [
          { label: "Name", render: (v) => h("b", null, vhostLabel(v.name)) },
          { label: "Description", render: (v) => v.description || "" },
          { label: "Tags", render: (v) => h("span", { class: "tags" }, tagsOf(v.tags).map((t) => badge(t, "tag"))) },
          { label: "Ready", cls: "num", render: (v) => fmtNum(v.messages_ready ?? 0) },
          { label: "Unacked", cls: "num", render: (v) => fmtNum(v.messages_unacknowledged ?? 0) },
          { label: "Total", cls: "num", render: (v) => fmtNum(v.messages ?? 0) },
          { label: "Publish", cls: "num", render: (v) => fmtRate(rateOf(v, "publish") || 0) },
          { label: "Deliver / get", cls: "num", render: (v) => fmtRate(rateOf(v, "deliver_get") || 0) },
          {
            label: "",
            cls: "actions",
            render: (v) =>
              actionButton("Delete", "small danger", async () => {
                if (!window.confirm(`Delete virtual host ${v.name}, with all its queues, exchanges and messages?`)) return;
                await api("DELETE", `api/vhosts/${enc(v.name)}`);
                forgetVhosts();
                info(`Virtual host ${v.name} deleted.`);
                reload();
              }),
          },
        ],
        list,
        { empty: "No virtual hosts.", rowAttrs: (v) => ({ dataset: { vhost: v.name } }) },
      );
    });
  }

  function userSelect() {
    const sel = h("select", { "aria-label": "User" }, h("option", { value: "" }, "Loading users…"));
    apiGet("api/users")
      .then((users) => {
        setKids(sel, ...users.map((u) => h("option", { value: u.name }, u.name)));
        if (whoami && users.some((u) => u.name === whoami.name)) sel.value = whoami.name;
      })
      .catch((e) => reportError(e, "users"));
    return sel;
  }

  function pagePermissions(ctx, view) {
    const body = h("div", { id: "permissions" });
    const topic = h("div", { id: "topic-permissions" });
    let reload = null;
    let reloadTopic = null;
    const user = userSelect();
    const vsel = vhostSelect(defaultVhost(), false);
    const conf = h("input", { value: ".*", class: "mono" });
    const write = h("input", { value: ".*", class: "mono" });
    const read = h("input", { value: ".*", class: "mono" });
    const form = asyncForm(
      { id: "set-permission" },
      [field("User", user), field("Virtual host", vsel), field("Configure regexp", conf), field("Write regexp", write), field("Read regexp", read), h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn primary" }, "Set permission"))],
      async () => {
        if (!user.value) throw new Error("Pick a user.");
        await api("PUT", `api/permissions/${enc(vsel.value)}/${enc(user.value)}`, { configure: conf.value, write: write.value, read: read.value });
        info(`Permissions of ${user.value} in ${vhostLabel(vsel.value)} set.`);
        reload();
      },
    );
    const tuser = userSelect();
    const tvsel = vhostSelect(defaultVhost(), false);
    const texch = h("input", { value: "amq.topic", autocomplete: "off" });
    const twrite = h("input", { value: ".*", class: "mono" });
    const tread = h("input", { value: ".*", class: "mono" });
    const tform = asyncForm(
      { id: "set-topic-permission" },
      [field("User", tuser), field("Virtual host", tvsel), field("Exchange", texch), field("Write regexp", twrite), field("Read regexp", tread), h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn primary" }, "Set topic permission"))],
      async () => {
        if (!tuser.value) throw new Error("Pick a user.");
        await api("PUT", `api/topic-permissions/${enc(tvsel.value)}/${enc(tuser.value)}`, { exchange: texch.value, write: twrite.value, read: tread.value });
        info(`Topic permissions of ${tuser.value} on ${texch.value} set.`);
        reloadTopic();
      },
    );
    view.append(
      pageHeader("Permissions"),
      h(
        "div",
        { class: "cols-2 wide-left" },
        panel("Permissions", body),
        h("details", { class: "panel fold", open: true }, h("summary", null, "Set permission"), form),
      ),
      h(
        "div",
        { class: "cols-2 wide-left" },
        panel("Topic permissions", topic),
        h("details", { class: "panel fold", open: true }, h("summary", null, "Set topic permission"), tform),
      ),
    );
    reload = live(ctx, body, async () => {
      const list = await apiGet("api/permissions");
      return table(
        [
          { label: "User", render: (p) => h("b", null, p.user) },
          { label: "Vhost", render: (p) => vhostLabel(p.vhost) },
          { label: "Configure", render: (p) => h("span", { class: "mono" }, p.configure) },
          { label: "Write", render: (p) => h("span", { class: "mono" }, p.write) },
          { label: "Read", render: (p) => h("span", { class: "mono" }, p.read) },
          {
            label: "",
            cls: "actions",
            render: (p) =>
              actionButton("Clear", "small danger", async () => {
                if (!window.confirm(`Remove the permissions of ${p.user} in ${vhostLabel(p.vhost)}?`)) return;
                await api("DELETE", `api/permissions/${enc(p.vhost)}/${enc(p.user)}`);
                info(`Permissions of ${p.user} in ${vhostLabel(p.vhost)} cleared.`);
                reload();
              }),
          },
        ],
        list,
        { cls: "compact", empty: "No permissions." },
      );
    }, "permissions");
    reloadTopic = live(ctx, topic, async () => {
      const list = await apiGet("api/topic-permissions");
      return table(
        [
          { label: "User", render: (p) => h("b", null, p.user) },
          { label: "Vhost", render: (p) => vhostLabel(p.vhost) },
          { label: "Exchange", render: (p) => p.exchange },
          { label: "Write", render: (p) => h("span", { class: "mono" }, p.write) },
          { label: "Read", render: (p) => h("span", { class: "mono" }, p.read) },
          {
            label: "",
            cls: "actions",
            render: (p) =>
              actionButton("Clear", "small danger", async () => {
                if (!window.confirm(`Remove the topic permissions of ${p.user} in ${vhostLabel(p.vhost)}?`)) return;
                await api("DELETE", `api/topic-permissions/${enc(p.vhost)}/${enc(p.user)}`);
                info(`Topic permissions of ${p.user} in ${vhostLabel(p.vhost)} cleared.`);
                reloadTopic();
              }),
          },
        ],
        list,
        { cls: "compact", empty: "No topic permissions: topic exchanges are not restricted." },
      );
    }, "topic-permissions");
  }

  function pagePolicies(ctx, view) {
    const body = h("div", { id: "policies" });
    let reload = null;
    const vsel = vhostSelect(defaultVhost(), false);
    const name = h("input", { required: true, autocomplete: "off", placeholder: "policy name", id: "policy-name" });
    const pattern = h("input", { required: true, autocomplete: "off", placeholder: "^orders\\.", class: "mono", id: "policy-pattern" });
    const applyTo = select([["queues", "Queues"], ["exchanges", "Exchanges"], ["all", "Exchanges and queues"]], "queues");
    const priority = h("input", { type: "number", value: 0, class: "narrow" });
    const def = h("textarea", { rows: 3, class: "kv-input", id: "policy-definition", placeholder: "max-length=1000\nmessage-ttl=60000\ndead-letter-exchange=dlx" });
    const form = asyncForm(
      { id: "add-policy" },
      [
        field("Virtual host", vsel),
        field("Name", name),
        field("Pattern", pattern, "regular expression matched against queue / exchange names"),
        field("Apply to", applyTo),
        field("Priority", priority),
        field("Definition", def, "key=value, one per line; or a JSON object"),
        h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn primary" }, "Add / update policy")),
      ],
      async () => {
        const n = name.value.trim();
        if (!n) throw new Error("The policy needs a name.");
        let definition;
        const text = def.value.trim();
        if (text.startsWith("{")) {
          try {
            definition = JSON.parse(text);
          } catch (e) {
            throw new Error(`Definition is not valid JSON: ${e.message}`);
          }
        } else definition = parseKV(text, "Definition");
        if (!Object.keys(definition).length) throw new Error("The definition is empty.");
        await api("PUT", `api/policies/${enc(vsel.value)}/${enc(n)}`, { pattern: pattern.value, definition, priority: parseInt(priority.value, 10) || 0, "apply-to": applyTo.value });
        info(`Policy ${n} saved.`);
        name.value = "";
        reload();
      },
    );
    view.append(pageHeader("Policies"), body, h("details", { class: "panel fold", open: true }, h("summary", null, "Add / update a policy"), form));
    reload = live(ctx, body, async () => {
      const list = await apiGet("api/policies");
      return table(
        [
          { label: "Vhost", render: (p) => vhostLabel(p.vhost) },
          { label: "Name", render: (p) => h("b", null, p.name) },
          { label: "Pattern", render: (p) => h("span", { class: "mono" }, p.pattern) },
          { label: "Apply to", render: (p) => p["apply-to"] },
          { label: "Definition", render: (p) => argsView(p.definition) },
          { label: "Priority", cls: "num", render: (p) => String(p.priority ?? 0) },
          {
            label: "",
            cls: "actions",
            render: (p) =>
              actionButton("Delete", "small danger", async () => {
                if (!window.confirm(`Delete policy ${p.name} in ${vhostLabel(p.vhost)}?`)) return;
                await api("DELETE", `api/policies/${enc(p.vhost)}/${enc(p.name)}`);
                info(`Policy ${p.name} deleted.`);
                reload();
              }),
          },
        ],
        list,
        { empty: "No policies.", rowAttrs: (p) => ({ dataset: { policy: p.name } }) },
      );
    });
  }

  // ---------------------------------------------------------------------
  // Definitions
  // ---------------------------------------------------------------------

  const DEF_KINDS = ["users", "vhosts", "permissions", "topic_permissions", "parameters", "global_parameters", "policies", "queues", "exchanges", "bindings"];

  function defSummary(defs) {
    return h(
      "div",
      { class: "def-summary" },
      DEF_KINDS.filter((k) => Array.isArray(defs[k])).map((k) => h("span", { class: "def-count", dataset: { kind: k } }, h("b", null, fmtNum(defs[k].length)), " ", k.replace("_", " "))),
    );
  }

  function pageDefinitions(ctx, view) {
    const vsel = vhostSelect("", true);
    const dlResult = h("div", { id: "download-result" });
    const upResult = h("div", { id: "upload-result" });
    const file = h("input", { type: "file", accept: ".json,application/json", id: "definitions-file" });
    const download = actionButton("Download definitions", "primary", async () => {
      const v = vsel.value;
      const defs = await apiGet(v ? `api/definitions/${enc(v)}` : "api/definitions");
      const text = JSON.stringify(defs, null, 2);
      const blob = new Blob([text + "\n"], { type: "application/json" });
      const url = URL.createObjectURL(blob);
      const stamp = new Date().toISOString().slice(0, 19).replace(/[:T]/g, "-");
      const host = (lastOverview && (lastOverview.cluster_name || lastOverview.node)) || "switchyard";
      const a = h("a", { href: url, download: `${host.replace(/[^\w.-]+/g, "_")}${v ? "_" + v.replace(/[^\w.-]+/g, "_") : ""}_${stamp}.json` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
      setKids(dlResult, h("p", null, `Downloaded ${fmtBytes(text.length)}:`), defSummary(defs));
      dlResult.dataset.state = "loaded";
    }, { id: "download-definitions" });
    const upload = asyncForm(
      { id: "upload-definitions" },
      [field("Definitions file", file, "a JSON file as downloaded here, or exported by RabbitMQ"), h("div", { class: "form-actions" }, h("button", { type: "submit", class: "btn primary" }, "Upload definitions"))],
      async () => {
        const f = file.files && file.files[0];
        if (!f) throw new Error("Choose a definitions file first.");
        const text = await f.text();
        let defs;
        try {
          defs = JSON.parse(text);
        } catch (e) {
          throw new Error(`${f.name} is not valid JSON: ${e.message}`);
        }
        if (!defs || typeof defs !== "object" || Array.isArray(defs)) throw new Error(`${f.name} does not hold a definitions object.`);
        const v = vsel.value;
        await api("POST", v ? `api/definitions/${enc(v)}` : "api/definitions", defs);
        forgetVhosts();
        setKids(upResult, h("p", { class: "ok-text" }, `✓ Imported ${f.name}:`), defSummary(defs));
        upResult.dataset.state = "loaded";
        info(`Definitions from ${f.name} imported.`);
      },
    );
    view.append(
      pageHeader("Definitions", h("span", { class: "muted count" }, "Users, virtual hosts, permissions, policies, queues, exchanges and bindings as one JSON file"), h("label", { class: "check" }, "Scope", vsel)),
      h("div", { class: "cols-2" }, panel("Export", h("p", { class: "hint" }, "Saves the broker's definitions (not messages) as a JSON file."), download, dlResult), panel("Import", upload, upResult)),
    );
  }

  // ---------------------------------------------------------------------
  // start
  // ---------------------------------------------------------------------

  function init() {
    $("#login-form").addEventListener("submit", submitLogin);
    $("#logout").addEventListener("click", () => logout());
    const rs = $("#refresh-select");
    rs.value = String(state.refresh);
    rs.addEventListener("change", () => {
      state.refresh = Number(rs.value);
      saveState();
      route();
    });
    window.addEventListener("hashchange", route);
    window.addEventListener("storage", () => {});
    const token = sessionStorage.getItem(AUTH_KEY);
    if (!token) return showLogin();
    const cached = readJSON(sessionStorage, WHO_KEY);
    rawRequest("GET", "api/whoami", undefined, token)
      .then((res) => {
        if (res.status === 401) return logout("Your session has expired; please log in again.");
        if (!res.ok) throw apiErrorFrom(res, "GET", "api/whoami");
        sessionStorage.setItem(WHO_KEY, JSON.stringify(res.data));
        startApp(res.data);
      })
      .catch((e) => {
        if (cached) {
          startApp(cached);
          reportError(e);
        } else showLogin(`The broker did not answer: ${errorText(e)}`);
      });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
