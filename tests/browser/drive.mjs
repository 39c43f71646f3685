// Drives tests/browser/page in headless Chromium for tests/python/test_browser.py.
//
//   node drive.mjs --url <page URL> --screenshot <png path> [--chromium /usr/bin/chromium]
//
// Line protocol, one JSON object per line.
//   stdout (events):  {"event":"ready"|"received"|"sent"|"screenshot"|"error"|"bye", ...}
//   stdin (commands): {"cmd":"wait_received"}            -> "received" once STOMP and MQTT each got a message
//                     {"cmd":"send","stomp":B,"mqtt":B}  -> "sent" once the STOMP receipt and MQTT PUBACK arrived
//                     {"cmd":"amqp","ok":bool,"detail":S} -> shows the AMQP side's verdict, then "screenshot"
//                     {"cmd":"quit"}                     -> closes the clients and the browser, "bye", exit 0
// The first event, "ready", comes once both subscriptions are confirmed
// (STOMP receipt, MQTT SUBACK).  Every event carries the page's
// window.results.  On any failure: an "error" event, a screenshot, exit 1.
// Everything is bounded: each step STEP_TIMEOUT_MS, the whole run WATCHDOG_MS.
// The page's console goes to stderr.

import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { createInterface } from "node:readline";
import { chromium } from "playwright-core";

const STEP_TIMEOUT_MS = 20_000;
const WATCHDOG_MS = 90_000;

function parseArgs(argv) {
  const out = { chromium: "/usr/bin/chromium" };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (argv[i + 1] === undefined) throw new Error(`missing value for ${argv[i]}`);
    out[key] = argv[i + 1];
  }
  if (!out.url || !out.screenshot) throw new Error("usage: drive.mjs --url URL --screenshot PATH [--chromium PATH]");
  return out;
}

const args = parseArgs(process.argv.slice(2));

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function note(text) {
  process.stderr.write(`[drive ${new Date().toISOString().slice(11, 23)}] ${text}\n`);
}

let context = null;
let page = null;
let profileDir = null;
let screenshotTaken = false;

async function results() {
  if (!page) return null;
  try {
    return await page.evaluate(() => window.results ?? null);
  } catch (e) {
    return { unavailable: String(e) };
  }
}

async function screenshot() {
  if (!page) return;
  mkdirSync(dirname(args.screenshot), { recursive: true });
  await page.screenshot({ path: args.screenshot, fullPage: true, timeout: STEP_TIMEOUT_MS });
  screenshotTaken = true;
  note(`screenshot ${args.screenshot}`);
}

async function shutdown() {
  if (page) {
    try {
      await Promise.race([page.evaluate(() => window.closeAll && window.closeAll()), sleep(4000)]);
    } catch {
      // the page may be gone already
    }
  }
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

function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

let failing = false;
async function failAndExit(message) {
  if (failing) return;
  failing = true;
  note(`error: ${message}`);
  const res = await Promise.race([results(), sleep(3000).then(() => null)]);
  emit({ event: "error", message, results: res });
  try {
    if (!screenshotTaken) await screenshot();
  } catch (e) {
    note(`screenshot after error failed: ${e}`);
  }
  await shutdown();
  process.exit(1);
}

const watchdog = setTimeout(() => {
  failAndExit(`watchdog: the driver ran for more than ${WATCHDOG_MS / 1000} s`);
}, WATCHDOG_MS);

for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"]) {
  process.on(sig, async () => {
    note(`got ${sig}`);
    await shutdown();
    process.exit(1);
  });
}

async function waitFor(what, predicate) {
  try {
    await page.waitForFunction(predicate, null, { timeout: STEP_TIMEOUT_MS, polling: 50 });
  } catch (e) {
    throw new Error(`timed out after ${STEP_TIMEOUT_MS / 1000} s waiting for ${what}`);
  }
}

async function main() {
  profileDir = mkdtempSync(join(tmpdir(), "switchyard-chromium-"));
  note(`launching ${args.chromium} with profile ${profileDir}`);
  context = await chromium.launchPersistentContext(profileDir, {
    executablePath: args.chromium,
    headless: true,
    // Without the background-networking flags Chromium keeps trying to reach
    // Google services, which a machine without network makes it stall on.
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
    viewport: { width: 1100, height: 760 },
    timeout: STEP_TIMEOUT_MS,
  });
  note(`browser ${context.browser()?.version() ?? "(persistent context)"}`);
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.on("console", (m) => {
    const prefix = `[page ${m.type()}]`;
    process.stderr.write(m.text().replace(/\n+$/, "").split("\n").map((l) => `${prefix} ${l}\n`).join(""));
  });
  page.on("pageerror", (e) => process.stderr.write(`[page exception] ${e}\n`));
  page.on("requestfailed", (r) => process.stderr.write(`[page request failed] ${r.url()} ${r.failure()?.errorText}\n`));

  note(`opening ${args.url}`);
  const resp = await page.goto(args.url, { waitUntil: "load", timeout: STEP_TIMEOUT_MS });
  if (!resp || !resp.ok()) throw new Error(`loading ${args.url}: HTTP ${resp ? resp.status() : "no response"}`);

  await waitFor(
    "the STOMP subscription receipt and the MQTT SUBACK",
    () => window.results && (window.results.errors.length > 0 || (window.results.stomp.subscribed && window.results.mqtt.subscribed)),
  );
  await checkErrors();
  emit({ event: "ready", results: await results() });

  const rl = createInterface({ input: process.stdin, crlfDelay: Infinity });
  for await (const line of rl) {
    if (!line.trim()) continue;
    const cmd = JSON.parse(line);
    note(`command ${cmd.cmd}`);
    switch (cmd.cmd) {
      case "wait_received":
        await waitFor(
          "a message on the STOMP subscription and on the MQTT subscription",
          () => window.results.errors.length > 0 || (window.results.stomp.received.length > 0 && window.results.mqtt.received.length > 0),
        );
        await checkErrors();
        emit({ event: "received", results: await results() });
        break;
      case "send": {
        const sent = await Promise.race([
          page.evaluate(([s, m]) => window.sendAll(s, m), [cmd.stomp, cmd.mqtt]),
          sleep(STEP_TIMEOUT_MS).then(() => null),
        ]);
        if (!sent) throw new Error(`timed out after ${STEP_TIMEOUT_MS / 1000} s waiting for the STOMP receipt and the MQTT PUBACK`);
        await checkErrors();
        emit({ event: "sent", results: await results() });
        break;
      }
      case "amqp":
        await page.evaluate(([ok, detail]) => window.markAmqp(ok, detail), [!!cmd.ok, cmd.detail ?? null]);
        await screenshot();
        emit({ event: "screenshot", path: args.screenshot, results: await results() });
        break;
      case "quit":
        if (!screenshotTaken) await screenshot();
        await shutdown();
        emit({ event: "bye" });
        clearTimeout(watchdog);
        process.exit(0);
        break;
      default:
        throw new Error(`unknown command ${JSON.stringify(cmd)}`);
    }
  }
  // stdin closed without "quit": the test side went away.
  throw new Error("stdin closed before the quit command");
}

async function checkErrors() {
  const res = await results();
  if (res && Array.isArray(res.errors) && res.errors.length) {
    throw new Error(`the page reported: ${res.errors.join("; ")}`);
  }
}

main().catch((e) => failAndExit(e && e.message ? e.message : String(e)));
