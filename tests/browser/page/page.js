// Browser side of tests/python/test_browser.py (driven by ../drive.mjs).
//
// Query string: stomp=<web-stomp port>, mqtt=<web-mqtt port>, uniq=<suffix>,
// optional host (default 127.0.0.1), user and pass (default guest/guest).
//
// Connects to ws://host:<port>/ws with @stomp/stompjs (subprotocols
// v12.stomp, v11.stomp, v10.stomp) and MQTT.js (subprotocol mqtt, MQTT 3.1.1),
// subscribes STOMP /topic/browser.<uniq> and MQTT browser/<uniq>/in, and
// records what arrives.  window.sendAll() then publishes over STOMP to
// /queue/browser-<uniq> and over MQTT to browser/<uniq>/out.  Everything is in
// window.results (read by the driver) and rendered on the page (for the
// screenshot).
"use strict";

(function () {
  const q = new URLSearchParams(location.search);
  const host = q.get("host") || "127.0.0.1";
  const uniq = q.get("uniq") || "nouniq";
  const user = q.get("user") || "guest";
  const pass = q.get("pass") || "guest";

  const results = {
    params: {
      host,
      uniq,
      stompPort: q.get("stomp"),
      mqttPort: q.get("mqtt"),
    },
    stomp: {
      url: `ws://${host}:${q.get("stomp")}/ws`,
      state: "not started",
      subprotocol: null,
      version: null,
      server: null,
      subscribeTo: `/topic/browser.${uniq}`,
      subscribed: false,
      received: [],
      sendTo: `/queue/browser-${uniq}`,
      sentBody: null,
      sent: false,
    },
    mqtt: {
      url: `ws://${host}:${q.get("mqtt")}/ws`,
      state: "not started",
      subprotocol: null,
      subscribeTo: `browser/${uniq}/in`,
      grantedQos: null,
      subscribed: false,
      received: [],
      sendTo: `browser/${uniq}/out`,
      sentBody: null,
      sent: false,
    },
    sockets: [],
    amqp: { state: "waiting", detail: null },
    errors: [],
    log: [],
    done: false,
  };
  window.results = results;

  let stompClient = null;
  let mqttClient = null;

  // ---- WebSocket recorder: installed before the libraries load ------------
  const NativeWebSocket = window.WebSocket;
  class RecordingWebSocket extends NativeWebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const rec = {
        url: String(url),
        offered: protocols == null ? [] : [].concat(protocols),
        protocol: null,
        state: "connecting",
      };
      results.sockets.push(rec);
      this.addEventListener("open", () => {
        rec.protocol = this.protocol;
        rec.state = "open";
        for (const side of [results.stomp, results.mqtt]) {
          if (side.url === rec.url) side.subprotocol = this.protocol;
        }
        log(`websocket open ${rec.url} offered [${rec.offered.join(", ")}] got "${this.protocol}"`);
      });
      this.addEventListener("close", (e) => {
        rec.state = `closed ${e.code}${e.reason ? " " + e.reason : ""}`;
        log(`websocket ${rec.url} ${rec.state}`);
      });
    }
  }
  window.WebSocket = RecordingWebSocket;

  // ---- helpers ---------------------------------------------------------------
  function log(text) {
    const line = `${new Date().toISOString().slice(11, 23)} ${text}`;
    results.log.push(line);
    if (results.log.length > 60) results.log.shift();
    console.log(line);
    render();
  }

  function fail(where, text) {
    const msg = `${where}: ${text}`;
    results.errors.push(msg);
    console.error(msg);
    log(`ERROR ${msg}`);
  }

  function esc(s) {
    return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
  }

  function cls(ok, bad) {
    return ok ? "good" : bad ? "bad" : "pending";
  }

  function render() {
    if (!document.body) return;
    const s = results.stomp;
    const m = results.mqtt;
    const recv = (list) => (list.length ? list.map((r) => esc(`${r.where}: ${JSON.stringify(r.body)}`)).join("<br>") : "—");
    const rows = [
      ["Web-STOMP URL", esc(s.url)],
      ["STOMP state", `<span class="${cls(s.state === "connected", /error|closed|fail/.test(s.state))}">${esc(s.state)}</span>`
        + (s.version ? ` — STOMP ${esc(s.version)}, subprotocol "${esc(s.subprotocol)}"` : "")
        + (s.server ? `, server ${esc(s.server)}` : "")],
      ["STOMP subscribe", `${esc(s.subscribeTo)} <span class="${cls(s.subscribed)}">${s.subscribed ? "✓ receipt" : "…"}</span>`],
      ["STOMP received", `<span class="${cls(s.received.length)}">${recv(s.received)}</span>`],
      ["STOMP sent", `${esc(s.sendTo)} ${s.sentBody ? esc(JSON.stringify(s.sentBody)) : ""} <span class="${cls(s.sent)}">${s.sent ? "✓ receipt" : "…"}</span>`],
      ["Web-MQTT URL", esc(m.url)],
      ["MQTT state", `<span class="${cls(m.state === "connected", /error|closed|fail|offline/.test(m.state))}">${esc(m.state)}</span>`
        + (m.subprotocol ? ` — MQTT 3.1.1, subprotocol "${esc(m.subprotocol)}"` : "")],
      ["MQTT subscribe", `${esc(m.subscribeTo)} <span class="${cls(m.subscribed)}">${m.subscribed ? `✓ SUBACK qos ${m.grantedQos}` : "…"}</span>`],
      ["MQTT received", `<span class="${cls(m.received.length)}">${recv(m.received)}</span>`],
      ["MQTT sent", `${esc(m.sendTo)} ${m.sentBody ? esc(JSON.stringify(m.sentBody)) : ""} <span class="${cls(m.sent)}">${m.sent ? "✓ PUBACK" : "…"}</span>`],
      ["AMQP consumer", `<span class="${cls(results.amqp.state === "verified", results.amqp.state === "failed")}">${esc(results.amqp.state)}</span>`
        + (results.amqp.detail ? ` — ${esc(results.amqp.detail)}` : "")],
    ];
    if (results.errors.length) rows.push(["errors", `<span class="bad">${results.errors.map(esc).join("<br>")}</span>`]);
    const tbody = document.querySelector("#status tbody");
    if (tbody) tbody.innerHTML = rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${v}</td></tr>`).join("");
    const params = document.getElementById("params");
    if (params) params.textContent = `uniq=${uniq}  page=${location.origin}${location.pathname}  ${navigator.userAgent.match(/(Headless)?Chrom\S+/)?.[0] || ""}`;
    const banner = document.getElementById("banner");
    if (banner) {
      if (results.errors.length || results.amqp.state === "failed") {
        banner.className = "fail";
        banner.textContent = `FAILED: ${results.errors[0] || results.amqp.detail || ""}`;
      } else if (results.amqp.state === "verified") {
        banner.className = "ok";
        banner.textContent = "PASSED: browser ⇄ AMQP over Web-STOMP and Web-MQTT";
      } else {
        banner.className = "running";
        banner.textContent = "running…";
      }
    }
    const logEl = document.getElementById("log");
    if (logEl) logEl.textContent = results.log.slice(-14).join("\n");
  }

  // ---- STOMP -------------------------------------------------------------------
  function startStomp() {
    const s = results.stomp;
    s.state = "connecting";
    const subReceipt = `sub-${uniq}`;
    stompClient = new StompJs.Client({
      brokerURL: s.url,
      connectHeaders: { login: user, passcode: pass },
      reconnectDelay: 0, // one attempt: a failure must show, not be retried
      connectionTimeout: 10000,
      debug: (text) => console.debug(`stomp: ${text}`),
    });
    stompClient.onConnect = (frame) => {
      s.state = "connected";
      s.version = frame.headers.version || stompClient.connectedVersion || null;
      s.server = frame.headers.server || null;
      log(`STOMP CONNECTED version ${s.version}`);
      stompClient.watchForReceipt(subReceipt, () => {
        s.subscribed = true;
        log(`STOMP subscribed to ${s.subscribeTo}`);
      });
      stompClient.subscribe(
        s.subscribeTo,
        (message) => {
          s.received.push({ where: message.headers.destination || s.subscribeTo, body: message.body });
          log(`STOMP MESSAGE ${JSON.stringify(message.body)}`);
        },
        { receipt: subReceipt },
      );
    };
    stompClient.onStompError = (frame) => {
      s.state = "error";
      fail("STOMP", `ERROR frame: ${frame.headers.message || ""} ${frame.body || ""}`.trim());
    };
    stompClient.onWebSocketError = () => {
      if (!results.done) fail("STOMP", `WebSocket error on ${s.url}`);
    };
    stompClient.onWebSocketClose = (e) => {
      if (!results.done) {
        s.state = `closed ${e.code}`;
        fail("STOMP", `WebSocket closed (${e.code}${e.reason ? " " + e.reason : ""})`);
      }
    };
    stompClient.activate();
  }

  function stompSend(body) {
    const s = results.stomp;
    return new Promise((resolve, reject) => {
      if (!stompClient || !stompClient.connected) return reject(new Error("STOMP not connected"));
      const receipt = `send-${uniq}`;
      stompClient.watchForReceipt(receipt, () => {
        s.sent = true;
        log(`STOMP sent to ${s.sendTo} (receipt)`);
        resolve();
      });
      s.sentBody = body;
      stompClient.publish({
        destination: s.sendTo,
        body,
        headers: { receipt, "content-type": "text/plain" },
      });
    });
  }

  // ---- MQTT ----------------------------------------------------------------------
  function startMqtt() {
    const m = results.mqtt;
    m.state = "connecting";
    mqttClient = mqtt.connect(m.url, {
      protocolVersion: 4,
      clientId: `browser-${uniq}`,
      username: user,
      password: pass,
      clean: true,
      keepalive: 30,
      reconnectPeriod: 0, // one attempt
      connectTimeout: 10000,
    });
    mqttClient.on("connect", () => {
      m.state = "connected";
      log("MQTT CONNACK");
      mqttClient.subscribe(m.subscribeTo, { qos: 1 }, (err, granted) => {
        if (err) return fail("MQTT", `SUBSCRIBE failed: ${err.message || err}`);
        m.grantedQos = granted && granted[0] ? granted[0].qos : null;
        if (m.grantedQos === 128 || m.grantedQos == null) {
          return fail("MQTT", `SUBSCRIBE refused (granted ${m.grantedQos})`);
        }
        m.subscribed = true;
        log(`MQTT subscribed to ${m.subscribeTo} (qos ${m.grantedQos})`);
      });
    });
    mqttClient.on("message", (topic, payload) => {
      const body = new TextDecoder().decode(payload);
      m.received.push({ where: topic, body });
      log(`MQTT PUBLISH ${topic} ${JSON.stringify(body)}`);
    });
    mqttClient.on("error", (err) => {
      m.state = "error";
      fail("MQTT", err && err.message ? err.message : String(err));
    });
    mqttClient.on("close", () => {
      if (!results.done) {
        m.state = "closed";
        fail("MQTT", "connection closed");
      }
    });
    mqttClient.on("offline", () => {
      if (!results.done) m.state = "offline";
    });
  }

  function mqttSend(body) {
    const m = results.mqtt;
    return new Promise((resolve, reject) => {
      if (!mqttClient || !mqttClient.connected) return reject(new Error("MQTT not connected"));
      m.sentBody = body;
      mqttClient.publish(m.sendTo, body, { qos: 1 }, (err) => {
        if (err) return reject(err);
        m.sent = true;
        log(`MQTT sent to ${m.sendTo} (PUBACK)`);
        resolve();
      });
    });
  }

  // ---- API for the driver ----------------------------------------------------
  window.sendAll = async function (stompBody, mqttBody) {
    try {
      await Promise.all([stompSend(stompBody), mqttSend(mqttBody)]);
    } catch (e) {
      fail("send", e && e.message ? e.message : String(e));
    }
    return { stomp: results.stomp.sent, mqtt: results.mqtt.sent, errors: results.errors };
  };

  window.markAmqp = function (ok, detail) {
    results.amqp.state = ok ? "verified" : "failed";
    results.amqp.detail = detail || null;
    log(`AMQP consumer ${results.amqp.state}${detail ? ": " + detail : ""}`);
  };

  window.closeAll = async function () {
    results.done = true;
    const waits = [];
    if (mqttClient) waits.push(new Promise((r) => mqttClient.end(false, {}, () => r())));
    if (stompClient) waits.push(stompClient.deactivate());
    await Promise.race([Promise.all(waits), new Promise((r) => setTimeout(r, 3000))]);
  };

  window.addEventListener("error", (e) => fail("page", e.message));
  window.addEventListener("unhandledrejection", (e) => fail("page", String(e.reason)));

  window.addEventListener("load", () => {
    render();
    if (typeof StompJs === "undefined") fail("page", "stomp.umd.min.js did not load (run tests/browser/setup.sh)");
    if (typeof mqtt === "undefined") fail("page", "mqtt.min.js did not load (run tests/browser/setup.sh)");
    if (results.errors.length) return;
    try {
      startStomp();
    } catch (e) {
      fail("STOMP", e.message || String(e));
    }
    try {
      startMqtt();
    } catch (e) {
      fail("MQTT", e.message || String(e));
    }
  });
})();
