// Drives the management web UI (crates/admin/ui, served by the broker's
// management listener) in headless Chromium for tests/python/test_management_ui.py.
//
//   node ui.mjs --url http://127.0.0.1:<management>/ --out <dir> --uniq <suffix>
//               --close-connection <name of a connection to close from the UI>
//               [--queue ui-demo] [--exchange ui-demo.ingress] [--user guest] [--password guest]
//               [--chromium /usr/bin/chromium]
//
// It logs in, visits every page, checks real content on each (see the steps
// below), keeps a full-page screenshot of each as <out>/ui-<page>.png, and
// ends with a wrong-password login.  Output on stdout, one JSON object a line:
//   {"event":"step","step":S,"ok":true,"detail":{...}}   after each step
//   {"event":"done","steps":[...],"requests":{...}}      at the end (exit 0)
//   {"event":"error","step":S,"message":M}                on a failure (exit 1,
//                                                          screenshot <out>/ui-failed-<step>.png)
// Every wait is bounded (STEP_TIMEOUT_MS each, STEP_BUDGET_MS a step,
// WATCHDOG_MS the whole run).  The page's console goes to stderr.

import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const STEP_TIMEOUT_MS = 20_000;
const STEP_BUDGET_MS = 60_000;
const WATCHDOG_MS = 170_000;

function parseArgs(argv) {
  const out = { chromium: "/usr/bin/chromium", user: "guest", password: "guest", queue: "ui-demo", exchange: "ui-demo.ingress" };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (argv[i + 1] === undefined) throw new Error(`missing value for ${argv[i]}`);
    out[key] = argv[i + 1];
  }
  if (!out.url || !out.out || !out.uniq || !out["close-connection"]) {
    throw new Error("usage: ui.mjs --url URL --out DIR --uniq SUFFIX --close-connection NAME [...]");
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const emit = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const note = (text) => process.stderr.write(`[ui ${new Date().toISOString().slice(11, 23)}] ${text}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

let context = null;
let page = null;
let profileDir = null;
let currentStep = "start";
const steps = [];
const pageErrors = [];
const apiRequests = []; // every api/ request the page made: "METHOD path?query"

async function shutdown() {
  if (context) {
    try {
      await Promise.race([context.close(), sleep(10_000)]);
    } catch (e) {
      note(`closing the browser: ${e}`);
    }
    context = null;
  }
  if (profileDir) {
    rmSync(profileDir, { recursive: true, force: true });
    profileDir = null;
  }
}

let failing = false;
async function failAndExit(message) {
  if (failing) return;
  failing = true;
  note(`error in step ${currentStep}: ${message}`);
  let shot = null;
  if (page) {
    shot = join(args.out, `ui-failed-${currentStep}.png`);
    try {
      await Promise.race([page.screenshot({ path: shot, fullPage: true, timeout: 10_000 }), sleep(12_000)]);
    } catch (e) {
      note(`screenshot after error failed: ${e}`);
      shot = null;
    }
  }
  emit({ event: "error", step: currentStep, message, screenshot: shot, steps, pageErrors });
  await shutdown();
  process.exit(1);
}

const watchdog = setTimeout(() => failAndExit(`watchdog: the driver ran for more than ${WATCHDOG_MS / 1000} s`), WATCHDOG_MS);
for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) {
  process.on(sig, async () => {
    note(`got ${sig}`);
    await shutdown();
    process.exit(1);
  });
}

// -- bounded helpers -------------------------------------------------------

async function waitFor(what, predicate, arg) {
  try {
    await page.waitForFunction(predicate, arg, { timeout: STEP_TIMEOUT_MS, polling: 100 });
  } catch (e) {
    const visible = await visibleErrors().catch(() => []);
    throw new Error(`timed out after ${STEP_TIMEOUT_MS / 1000} s waiting for ${what}` + (visible.length ? ` (the page shows: ${visible.join(" | ")})` : ""));
  }
}

async function step(name, fn) {
  currentStep = name;
  note(`step ${name}`);
  const t0 = Date.now();
  let timer;
  const budget = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`step ${name} took more than ${STEP_BUDGET_MS / 1000} s`)), STEP_BUDGET_MS);
  });
  try {
    const detail = await Promise.race([fn(), budget]);
    if (pageErrors.length) throw new Error(`JavaScript error on the page: ${pageErrors.join("; ")}`);
    const rec = { step: name, ok: true, ms: Date.now() - t0, detail: detail ?? null };
    steps.push(rec);
    emit({ event: "step", ...rec });
  } finally {
    clearTimeout(timer);
  }
}

async function shot(name) {
  mkdirSync(args.out, { recursive: true });
  const path = join(args.out, `ui-${name}.png`);
  await page.mouse.move(0, 0);
  // sticky header and navigation are drawn where the page is scrolled to
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path, fullPage: true, timeout: STEP_TIMEOUT_MS });
  note(`screenshot ${path}`);
  return path;
}

// The texts of the error messages the UI currently shows.
function visibleErrors() {
  return page.evaluate(() => [...document.querySelectorAll("#messages .msg-error .msg-text")].map((e) => e.textContent));
}
async function expectNoErrors(where) {
  const errs = await visibleErrors();
  if (errs.length) throw new Error(`${where}: the UI shows API errors: ${errs.join(" | ")}`);
}

async function goTo(pageName, loadedSelector) {
  await page.click(`#nav a[data-page="${pageName}"]`);
  await waitFor(`the ${pageName} page`, (p) => document.body.dataset.page === p, pageName);
  if (loadedSelector) {
    await waitFor(`${loadedSelector} to load on the ${pageName} page`, (sel) => {
      const el = document.querySelector(sel);
      return el && (el.dataset.state === "loaded" || el.dataset.state === "error");
    }, loadedSelector);
    const st = await page.getAttribute(loadedSelector, "data-state");
    if (st !== "loaded") throw new Error(`${loadedSelector} on the ${pageName} page failed to load: ${(await visibleErrors()).join(" | ")}`);
  }
}

const rowCount = (sel) => page.evaluate((s) => document.querySelectorAll(s).length, sel);

// -- the run ----------------------------------------------------------------

async function main() {
  mkdirSync(args.out, { recursive: true });
  profileDir = mkdtempSync(join(tmpdir(), "switchyard-ui-chromium-"));
  note(`launching ${args.chromium} with profile ${profileDir}`);
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: args.chromium,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
    viewport: { width: 1280, height: 800 },
    acceptDownloads: true,
    timeout: STEP_TIMEOUT_MS,
  });
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on("console", (m) => process.stderr.write(`[page ${m.type()}] ${m.text()}\n`));
  page.on("pageerror", (e) => {
    pageErrors.push(String(e));
    process.stderr.write(`[page exception] ${e}\n`);
  });
  page.on("dialog", (d) => {
    note(`dialog: ${d.message()} -> accept`);
    d.accept().catch(() => {});
  });
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith("/api/")) apiRequests.push(`${r.method()} ${u.pathname}${u.search}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400) process.stderr.write(`[page response] ${r.status()} ${r.request().method()} ${r.url()}\n`);
  });

  const Q = args.queue;
  const X = args.exchange;

  await step("login", async () => {
    const resp = await page.goto(args.url, { waitUntil: "load", timeout: STEP_TIMEOUT_MS });
    if (!resp || !resp.ok()) throw new Error(`loading ${args.url}: HTTP ${resp ? resp.status() : "no response"}`);
    for (const asset of ["app.js", "style.css", "favicon.svg"]) {
      const r = await page.request.get(new URL(asset, args.url).href, { timeout: STEP_TIMEOUT_MS });
      if (!r.ok()) throw new Error(`GET /${asset}: HTTP ${r.status()}`);
    }
    await waitFor("the login form", () => document.body.dataset.page === "login" && !document.querySelector("#login").hidden);
    await shot("login");
    await page.fill("#login-user", args.user);
    await page.fill("#login-pass", args.password);
    await page.click("#login-submit");
    await waitFor("the overview after logging in", () => document.body.dataset.page === "overview" && !document.querySelector("#app").hidden);
    const user = await page.textContent("#user-info");
    if (!user.includes(args.user)) throw new Error(`the header names ${JSON.stringify(user)}, not ${args.user}`);
    return { user };
  });

  await step("overview", async () => {
    await waitFor("the object totals", () => document.querySelectorAll("#totals [data-total]").length >= 8);
    await waitFor(
      "connections by protocol with AMQP, MQTT and STOMP rows",
      () => {
        const rows = [...document.querySelectorAll("#by-protocol tr[data-protocol]")];
        const has = (p) => rows.some((r) => r.dataset.protocol.startsWith(p) && Number(r.dataset.count) >= 1);
        return has("AMQP") && has("MQTT") && has("STOMP");
      },
    );
    await waitFor("the listeners table", () => document.querySelectorAll("#listeners tr[data-protocol]").length >= 1);
    await expectNoErrors("overview");
    return page.evaluate(() => ({
      byProtocol: Object.fromEntries([...document.querySelectorAll("#by-protocol tr[data-protocol]")].map((r) => [r.dataset.protocol, Number(r.dataset.count)])),
      totals: Object.fromEntries([...document.querySelectorAll("#totals [data-total]")].map((t) => [t.dataset.total, t.querySelector(".tile-value").textContent])),
      listeners: [...document.querySelectorAll("#listeners tr[data-protocol]")].map((r) => r.textContent),
    }));
  });

  await step("connections", async () => {
    await goTo("connections", "#connections");
    await waitFor("AMQP, MQTT and STOMP connections listed", () => {
      const ps = [...document.querySelectorAll("#connections tr[data-protocol]")].map((r) => r.dataset.protocol);
      return ["AMQP", "MQTT", "STOMP"].every((p) => ps.some((x) => x.startsWith(p)));
    });
    await expectNoErrors("connections");
    const detail = await page.evaluate(() => [...document.querySelectorAll("#connections tr[data-protocol]")].map((r) => r.dataset.protocol));
    await shot("connections");

    // close the connection the test opened for this
    const victim = args["close-connection"];
    await page.fill("#connection-filter", victim);
    await waitFor(`the connection ${victim}, alone`, (v) => {
      const rows = [...document.querySelectorAll("#connections tr[data-name]")];
      return rows.length === 1 && rows[0].dataset.name === v;
    }, victim);
    const closed = await page.getAttribute("#connections tr[data-name]", "data-name");
    await page.click("#connections tr[data-name] button"); // confirm() accepted
    await waitFor(`${victim} gone from the list`, () => {
      const el = document.querySelector("#connections");
      return el?.dataset.state === "loaded" && el.querySelectorAll("tr[data-name]").length === 0;
    });
    await expectNoErrors("closing a connection");
    await page.fill("#connection-filter", "");
    return { protocols: detail, closed };
  });

  await step("channels", async () => {
    await goTo("channels", "#channels");
    await waitFor("at least one channel", () => document.querySelectorAll("#channels tbody tr:not(.empty)").length >= 1);
    await expectNoErrors("channels");
    await shot("channels");
    return { rows: await rowCount("#channels tbody tr:not(.empty)") };
  });

  await step("consumers", async () => {
    await goTo("consumers", "#consumers");
    await expectNoErrors("consumers");
    await shot("consumers");
    return { rows: await rowCount("#consumers tbody tr:not(.empty)") };
  });

  await step("queues", async () => {
    await page.click(`#nav a[data-page="queues"]`);
    await waitFor("the queues page", () => document.body.dataset.page === "queues");
    // Unfiltered first: the list shows a page of all queues (which need not
    // include ui-demo on a broker shared with other tests), then only the
    // ui-* ones (ui-demo, ui-extra-*, and the MQTT session ui-demo-<uniq>).
    await page.fill("#queue-filter", "");
    await waitFor("the unfiltered queue list", () => {
      const el = document.querySelector("#queues");
      return el?.dataset.state === "loaded" && el.querySelectorAll("tr[data-queue]").length >= 1 && !/matching/.test(document.querySelector("#queue-summary").textContent);
    });
    const unfiltered = await page.textContent("#queue-summary");
    await page.fill("#queue-filter", "ui-");
    await waitFor(`${Q} with 3 messages in the queue list`, (q) => {
      const row = [...document.querySelectorAll("#queues tr[data-queue]")].find((r) => r.dataset.queue === q);
      return row && row.dataset.messages === "3" && row.querySelector(".q-messages").textContent.trim() === "3";
    }, Q);
    await waitFor("other queues as well", (q) => [...document.querySelectorAll("#queues tr[data-queue]")].some((r) => !r.dataset.queue.includes(q)), Q);
    await expectNoErrors("queues");
    const before = await page.evaluate(() => [...document.querySelectorAll("#queues tr[data-queue]")].map((r) => r.dataset.queue));
    const summary = await page.textContent("#queue-summary");
    await shot("queues");

    // sorting by total messages asks the server (sort=messages)
    await page.click('#queues th button[data-sort="messages"]');
    await waitFor("the list sorted by messages", () => document.querySelector("#queues th.sorted button[data-sort='messages']") !== null);

    await page.fill("#queue-filter", Q);
    await waitFor(`the filter to narrow the list to names containing ${Q}`, (q) => {
      const names = [...document.querySelectorAll("#queues tr[data-queue]")].map((r) => r.dataset.queue);
      return names.length >= 1 && names.every((n) => n.includes(q)) && names.includes(q);
    }, Q);
    const after = await page.evaluate(() => [...document.querySelectorAll("#queues tr[data-queue]")].map((r) => r.dataset.queue));
    if (!(after.length < before.length)) throw new Error(`the filter did not narrow the list: ${before.length} rows before, ${after.length} after`);
    await shot("queues-filtered");
    return { before: before.length, after, summary, unfiltered };
  });

  const added = `ui-added-${args.uniq}`;
  await step("add-and-delete-queue", async () => {
    await page.click("#view details.fold > summary");
    await page.fill("#new-queue-name", added);
    await page.click('#add-queue button[type="submit"]');
    await waitFor("the confirmation of the new queue", (n) => [...document.querySelectorAll("#messages .msg-info")].some((m) => m.textContent.includes(n)), added);
    await page.fill("#queue-filter", added);
    await waitFor(`${added} in the list`, (n) => [...document.querySelectorAll("#queues tr[data-queue]")].some((r) => r.dataset.queue === n), added);
    await page.click(`#queues tr[data-queue="${added}"] a.name`);
    await waitFor("the new queue's page", (n) => document.body.dataset.page === "queue" && document.querySelector("#queue-name")?.textContent === n, added);
    await waitFor("its stats", () => document.querySelector("#queue-stats")?.dataset.state === "loaded");
    await page.click("#delete-queue"); // the confirm() dialog is accepted
    await waitFor("back on the queue list after deleting", () => document.body.dataset.page === "queues");
    await waitFor(`${added} gone from the list`, (n) => {
      const el = document.querySelector("#queues");
      return el && el.dataset.state === "loaded" && ![...el.querySelectorAll("tr[data-queue]")].some((r) => r.dataset.queue === n);
    }, added);
    await expectNoErrors("add and delete a queue");
    await page.fill("#queue-filter", Q);
    return { queue: added };
  });

  await step("queue", async () => {
    await waitFor(`${Q} in the filtered list`, (q) => document.querySelector(`#queues tr[data-queue="${q}"] a.name`) !== null, Q);
    await page.click(`#queues tr[data-queue="${Q}"] a.name`);
    await waitFor(`the ${Q} page`, (q) => document.body.dataset.page === "queue" && document.querySelector("#queue-name")?.textContent === q, Q);
    await waitFor("the queue stats", () => document.querySelector("#queue-stats")?.dataset.state === "loaded");
    await waitFor("the queue bindings", () => document.querySelector("#queue-bindings")?.dataset.state === "loaded");
    await waitFor(`the binding from ${X}`, (x) => [...document.querySelectorAll("#queue-bindings tr[data-source]")].some((r) => r.dataset.source === x), X);

    // Get one message, requeued
    await page.selectOption("#get-ackmode", "ack_requeue_true");
    await page.fill("#get-count", "1");
    await page.click('#get-messages button[type="submit"]');
    await waitFor("a message from Get", () => document.querySelector("#get-result .message pre.payload") !== null);
    const got = await page.evaluate(() => ({
      payload: document.querySelector("#get-result pre.payload").textContent,
      routingKey: document.querySelector("#get-result .routing-key")?.textContent,
      props: document.querySelector("#get-result .props")?.textContent ?? "",
    }));
    if (got.payload !== `${Q} message 1`) throw new Error(`Get showed payload ${JSON.stringify(got.payload)}, expected "${Q} message 1"`);
    if (got.routingKey !== Q) throw new Error(`Get showed routing key ${JSON.stringify(got.routingKey)}`);
    if (!got.props.includes("text/plain")) throw new Error(`Get showed properties ${JSON.stringify(got.props)} without content_type text/plain`);

    // Publish through the default exchange
    const payload = `published from the UI ${args.uniq}`;
    await page.fill("#queue-publish-payload", payload);
    await page.click('#queue-publish button[type="submit"]');
    await waitFor("the publish result", () => document.querySelector("#queue-publish-result [data-routed]") !== null);
    const routed = await page.getAttribute("#queue-publish-result [data-routed]", "data-routed");
    if (routed !== "true") throw new Error("publishing to the queue through the default exchange was not routed");
    await waitFor("4 messages in the queue", () => document.querySelector("#queue-messages")?.textContent.trim() === "4");
    await expectNoErrors("queue detail");
    await shot("queue");
    return { got, routed: true, payload };
  });

  await step("exchanges", async () => {
    await goTo("exchanges", "#exchanges");
    await waitFor(`${X} and amq.topic listed`, (x) => {
      const names = [...document.querySelectorAll("#exchanges tr[data-exchange]")].map((r) => r.dataset.exchange);
      return names.includes(x) && names.includes("amq.topic");
    }, X);
    await expectNoErrors("exchanges");
    await shot("exchanges");
    await page.click(`#exchanges tr[data-exchange="${X}"] a.name`);
    await waitFor(`the ${X} page`, () => document.body.dataset.page === "exchange");
    await waitFor("its bindings", () => document.querySelector("#exchange-bindings")?.dataset.state === "loaded");
    await waitFor(`the exchange-to-exchange binding to amq.topic and the binding to ${Q}`, (q) => {
      const dests = [...document.querySelectorAll("#exchange-bindings tr[data-destination]")].map((r) => r.dataset.destination);
      return dests.includes("amq.topic") && dests.includes(q);
    }, Q);

    // add a binding from the form, then remove it with its Unbind button
    const key = `ui.binding.${args.uniq}`;
    await page.fill('#add-binding input[placeholder="destination name"]', Q);
    await page.fill('#add-binding input[placeholder="routing key"]', key);
    await page.click('#add-binding button[type="submit"]');
    await waitFor("the new binding", (k) => document.querySelector(`#exchange-bindings tr[data-key="${k}"]`) !== null, key);
    await shot("exchange");
    await page.click(`#exchange-bindings tr[data-key="${key}"] button`);
    await waitFor("the new binding gone", (k) => {
      const el = document.querySelector("#exchange-bindings");
      return el.dataset.state === "loaded" && el.querySelector(`tr[data-key="${k}"]`) === null;
    }, key);
    await expectNoErrors("exchange detail");
    return { bindings: await rowCount("#exchange-bindings tr[data-destination]") };
  });

  await step("route", async () => {
    await goTo("route");
    await page.check('input[name="route-mode"][value="mqtt"]');
    await page.fill("#route-mqtt", "plant/7/temp");
    await page.click("#route-submit");
    await waitFor("the route tester's answer", () => ["loaded", "error"].includes(document.querySelector("#route-result")?.dataset.state));
    const st = await page.getAttribute("#route-result", "data-state");
    if (st !== "loaded") throw new Error(`the route tester failed: ${await page.textContent("#route-result")}`);
    const mqtt = await page.evaluate(() =>
      [...document.querySelectorAll("#route-result section.route")].map((s) => ({
        queue: s.dataset.queue,
        consumers: [...s.querySelectorAll("tr[data-kind]")].map((r) => ({ kind: r.dataset.kind, protocol: r.dataset.protocol })),
        chain: s.querySelector(".chain")?.textContent ?? "",
      })),
    );
    const withKind = (k, p) => mqtt.find((r) => r.consumers.some((c) => c.kind === k && c.protocol.startsWith(p)));
    if (!withKind("MQTT session", "MQTT")) throw new Error(`no route to an MQTT session: ${JSON.stringify(mqtt)}`);
    if (!withKind("STOMP subscription", "STOMP")) throw new Error(`no route to a STOMP subscription: ${JSON.stringify(mqtt)}`);
    await expectNoErrors("route tester (MQTT)");
    await shot("route");

    // through the exchange-to-exchange binding: X -> amq.topic -> queues
    await page.check('input[name="route-mode"][value="exchange"]');
    await page.fill("#route-exchange", X);
    await page.fill("#route-key", "plant.7.temp");
    await page.click("#route-submit");
    await waitFor("the answer for the exchange chain", (x) => {
      const el = document.querySelector("#route-result");
      return el?.dataset.state === "loaded" && el.textContent.includes(x) && el.querySelector("section.route") !== null;
    }, X);
    const chain = await page.evaluate(() =>
      [...document.querySelectorAll("#route-result section.route")].map((s) => ({ queue: s.dataset.queue, hops: s.querySelectorAll(".hop-node").length })),
    );
    if (!chain.some((r) => r.queue === args.queue)) throw new Error(`${args.queue} is not among the routes from ${X}: ${JSON.stringify(chain)}`);
    if (!chain.some((r) => r.hops >= 3)) throw new Error(`no route went through the exchange-to-exchange binding: ${JSON.stringify(chain)}`);
    await shot("route-chain");

    // nothing matches
    await page.check('input[name="route-mode"][value="mqtt"]');
    await page.fill("#route-mqtt", `nowhere/${args.uniq}`);
    await page.click("#route-submit");
    await waitFor("the unroutable answer", () => document.querySelector("#route-unroutable") !== null);
    await expectNoErrors("route tester");
    return { mqtt, chain };
  });

  await step("users", async () => {
    await goTo("users", "#users");
    await waitFor(`${args.user} among the users`, (u) => document.querySelector(`#users tr[data-user="${u}"]`) !== null, args.user);
    await expectNoErrors("users");
    await shot("users");
    return { rows: await rowCount("#users tr[data-user]") };
  });

  await step("vhosts", async () => {
    await goTo("vhosts", "#vhosts");
    await waitFor("the / vhost", () => document.querySelector('#vhosts tr[data-vhost="/"]') !== null);
    await expectNoErrors("vhosts");
    await shot("vhosts");
    return { rows: await rowCount("#vhosts tr[data-vhost]") };
  });

  await step("permissions", async () => {
    await goTo("permissions", "#permissions");
    await waitFor("the topic permissions", () => ["loaded", "error"].includes(document.querySelector("#topic-permissions")?.dataset.state));
    if ((await page.getAttribute("#topic-permissions", "data-state")) !== "loaded") throw new Error(`topic permissions failed to load: ${(await visibleErrors()).join(" | ")}`);
    await waitFor(`a permission for ${args.user}`, (u) => [...document.querySelectorAll("#permissions tbody tr")].some((r) => r.textContent.includes(u)), args.user);
    await expectNoErrors("permissions");
    await shot("permissions");
    return { rows: await rowCount("#permissions tbody tr:not(.empty)") };
  });

  const policy = `ui-policy-${args.uniq}`;
  await step("policies", async () => {
    await goTo("policies", "#policies");
    await page.fill('#add-policy input[placeholder="policy name"]', policy);
    await page.fill('#add-policy input[placeholder="^orders\\\\."]', `^ui-policy-${args.uniq}$`);
    await page.fill("#add-policy textarea", "max-length=1000\nmessage-ttl=60000");
    await page.click('#add-policy button[type="submit"]');
    await waitFor(`policy ${policy} listed`, (p) => document.querySelector(`#policies tr[data-policy="${p}"]`) !== null, policy);
    await expectNoErrors("policies");
    await shot("policies");
    await page.click(`#policies tr[data-policy="${policy}"] button`);
    await waitFor(`policy ${policy} gone`, (p) => document.querySelector("#policies")?.dataset.state === "loaded" && document.querySelector(`#policies tr[data-policy="${p}"]`) === null, policy);
    await expectNoErrors("policies after delete");
    return { policy };
  });

  const imported = `ui-imported-${args.uniq}`;
  await step("definitions", async () => {
    await goTo("definitions");
    const [download] = await Promise.all([page.waitForEvent("download", { timeout: STEP_TIMEOUT_MS }), page.click("#download-definitions")]);
    const file = await download.path();
    const defs = JSON.parse(readFileSync(file, "utf8"));
    if (!Array.isArray(defs.queues) || !defs.queues.some((q) => q.name === args.queue)) throw new Error(`the downloaded definitions do not list queue ${args.queue}`);
    const upload = { queues: [{ name: imported, vhost: "/", durable: true, auto_delete: false, arguments: {} }] };
    await page.setInputFiles("#definitions-file", { name: "ui-import.json", mimeType: "application/json", buffer: Buffer.from(JSON.stringify(upload)) });
    await page.click('#upload-definitions button[type="submit"]');
    await waitFor("the import confirmation", () => document.querySelector("#upload-result")?.dataset.state === "loaded");
    await waitFor("the download summary", () => document.querySelector("#download-result")?.dataset.state === "loaded");
    await expectNoErrors("definitions");
    await shot("definitions");
    return { filename: download.suggestedFilename(), queues: defs.queues.length, imported };
  });

  await step("overview-charts", async () => {
    await goTo("overview");
    await waitFor("connections by protocol", () => document.querySelector("#by-protocol")?.dataset.state === "loaded");
    await waitFor("at least three samples in the chart history", () => JSON.parse(sessionStorage.getItem("switchyard.history") || "[]").length >= 3);
    const samples = await page.evaluate(() => JSON.parse(sessionStorage.getItem("switchyard.history")));
    const canvases = await page.evaluate(() => [...document.querySelectorAll("canvas.chart")].map((c) => ({ w: c.width, h: c.height })));
    if (canvases.length !== 2 || canvases.some((c) => c.w < 200 || c.h < 100)) throw new Error(`charts not drawn: ${JSON.stringify(canvases)}`);
    await expectNoErrors("overview");
    await shot("overview");
    const last = samples[samples.length - 1];
    return { samples: samples.length, last };
  });

  await step("wrong-password", async () => {
    await page.click("#logout");
    await waitFor("the login form after logging out", () => document.body.dataset.page === "login" && !document.querySelector("#login").hidden);
    if (await page.evaluate(() => sessionStorage.getItem("switchyard.auth"))) throw new Error("the credentials stayed in sessionStorage after logging out");
    await page.fill("#login-user", args.user);
    await page.fill("#login-pass", `wrong-${args.uniq}`);
    await page.click("#login-submit");
    await waitFor("the login error", () => {
      const e = document.querySelector("#login-error");
      return e && !e.hidden && e.textContent.trim().length > 0;
    });
    const text = await page.textContent("#login-error");
    if (!/login failed/i.test(text)) throw new Error(`unexpected login error text ${JSON.stringify(text)}`);
    if (!(await page.evaluate(() => document.querySelector("#app").hidden))) throw new Error("the app is shown after a failed login");
    await shot("login-error");
    return { text };
  });

  currentStep = "end";
  const queueLists = apiRequests.filter((r) => /^GET \/api\/queues(\/[^/]+)?(\?|$)/.test(r));
  emit({ event: "done", steps, requests: { queueLists, count: apiRequests.length } });
  clearTimeout(watchdog);
  await shutdown();
  process.exit(0);
}

main().catch((e) => failAndExit(e && e.message ? e.message : String(e)));
