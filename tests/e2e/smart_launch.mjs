#!/usr/bin/env node
// End-to-end SMART App Launch driver: SMART's own JavaScript client (fhirclient) runs in headless
// Chromium against a running carebroker and completes an EHR launch and a standalone launch.
// Prints one JSON line {"ehr": {...}, "standalone": {...}} and exits 0, or explains and exits 1.
// Usage: see README.md beside this file.

import http from "node:http";
import fs from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const EHR_SCOPE = "launch openid fhirUser patient/*.rs online_access";
const STANDALONE_SCOPE = "launch/patient openid fhirUser patient/*.rs offline_access";
// The launch the EHR registers: the EHR's patient and user, not the standalone --patient.
const EHR_PATIENT = "9434765919";
const EHR_USER = { sub: "u-1", name: "Nadia Nurse", fhir_user: "Practitioner/pr-nurse-1", role_codes: ["R8001"], org: "A9A5A" };

/** A failure worth explaining: `detail` goes to stderr after the message. */
class E2EError extends Error {
  constructor(message, detail = "") {
    super(message);
    this.detail = detail;
  }
}

const USAGE = `usage: node tests/e2e/smart_launch.mjs [options]

Runs SMART's JavaScript client (fhirclient) in headless Chromium against a running carebroker:
an EHR launch, then a standalone launch. Prints one JSON line {"ehr": {...}, "standalone": {...}}.

  --broker URL            carebroker (default http://127.0.0.1:8080)
  --app-port PORT         where the demo SMART app is served (default 8765)
  --client-id ID          the app's client id (default demo-app)
  --ehr-id ID             the EHR client that registers the launch (default ehr-demo)
  --ehr-secret S | --ehr-secret-file F
                          the EHR's client secret (needed for the EHR launch;
                          the demo's is in certs/test/ehr-demo.secret)
  --username U --password P
                          the development sign-in (default nurse / nurse)
  --patient NHS_NUMBER    the patient to pick in the standalone launch (default 9000000009)
  --idp-login LOGIN       sign in at an upstream provider's page instead (tests/idp: a login;
                          tests/saml-idp: user:password)
  --only ehr|standalone   run one launch only
  --read-patient          also read the Patient with the token
  --screenshots DIR       save a screenshot of every page
  --serve-only            only serve the demo app, for a person to click through (no Chromium)
  --timeout MS            per-step timeout (default 30000)
  --chromium PATH         the browser (default /usr/bin/chromium)
  --help                  this text

Example, with ./scripts/run.sh running:
  node tests/e2e/smart_launch.mjs --ehr-secret-file certs/test/ehr-demo.secret
`;

function options() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        help: { type: "boolean", default: false },
        broker: { type: "string", default: "http://127.0.0.1:8080" },
        "app-port": { type: "string", default: "8765" },
        "client-id": { type: "string", default: "demo-app" },
        "ehr-id": { type: "string", default: "ehr-demo" },
        "ehr-secret": { type: "string" },
        "ehr-secret-file": { type: "string" },
        username: { type: "string", default: "nurse" },
        password: { type: "string", default: "nurse" },
        patient: { type: "string", default: "9000000009" },
        screenshots: { type: "string" },
        "read-patient": { type: "boolean", default: false },
        // Sign in at an upstream provider's page with this login instead of ours: tests/idp takes a
        // login (any password), tests/saml-idp `user:password`.
        "idp-login": { type: "string" },
        // Run only one of the two launches.
        only: { type: "string" },
        // Only serve the demo app (for a person clicking through in a browser); no Chromium.
        "serve-only": { type: "boolean", default: false },
        timeout: { type: "string", default: "30000" },
        chromium: { type: "string", default: "/usr/bin/chromium" },
      },
    }));
  } catch (e) {
    process.stderr.write(`smart_launch: ${e.message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    process.exit(0);
  }
  const broker = values.broker.replace(/\/+$/, "");
  return {
    broker,
    fhirBase: `${broker}/fhir`,
    appPort: Number(values["app-port"]),
    clientId: values["client-id"],
    ehrId: values["ehr-id"],
    ehrSecret: values["ehr-secret"],
    ehrSecretFile: values["ehr-secret-file"],
    username: values.username,
    password: values.password,
    patient: values.patient,
    screenshots: values.screenshots,
    readPatient: values["read-patient"],
    idpLogin: values["idp-login"],
    serveOnly: values["serve-only"],
    only: values.only,
    timeoutMs: Number(values.timeout),
    chromiumPath: values.chromium,
  };
}

// ---------------------------------------------------------------------------------------------
// The app's static server: the two pages, fhirclient's browser build and a generated config.

async function startAppServer(opts) {
  const files = {
    "/launch": path.join(HERE, "app/launch.html"),
    "/launch.html": path.join(HERE, "app/launch.html"),
    "/callback": path.join(HERE, "app/callback.html"),
    "/callback.html": path.join(HERE, "app/callback.html"),
    "/fhir-client.js": path.join(HERE, "node_modules/fhirclient/build/fhir-client.js"),
  };
  const config = `window.E2E_CONFIG = ${JSON.stringify({
    clientId: opts.clientId,
    ehrScope: EHR_SCOPE,
    standaloneScope: STANDALONE_SCOPE,
    readPatient: opts.readPatient,
  })};\n`;
  const types = { ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8" };

  const server = http.createServer(async (req, res) => {
    const { pathname } = new URL(req.url, "http://app.invalid");
    try {
      if (pathname === "/config.js") {
        res.writeHead(200, { "content-type": types[".js"], "cache-control": "no-store" });
        return res.end(config);
      }
      if (pathname === "/favicon.ico") return res.writeHead(204).end(); // keep the logs quiet
      const file = files[pathname];
      if (!file) return res.writeHead(404, { "content-type": "text/plain" }).end("not found");
      const body = await fs.readFile(file);
      res.writeHead(200, { "content-type": types[path.extname(file)], "cache-control": "no-store" });
      res.end(body);
    } catch (e) {
      res.writeHead(500, { "content-type": "text/plain" }).end(String(e));
    }
  });
  await new Promise((resolve, reject) => {
    server.once("error", (e) =>
      reject(new E2EError(`cannot serve the app on 127.0.0.1:${opts.appPort}: ${e.code || e.message}`)),
    );
    server.listen(opts.appPort, "127.0.0.1", resolve);
  });
  return server;
}

// ---------------------------------------------------------------------------------------------
// Broker calls made by Node (the EHR's side).

async function fetchJson(url, init, what) {
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    throw new E2EError(`${what}: cannot reach ${url}: ${e.cause?.code || e.cause?.message || e.message}`, "Is carebroker running?");
  }
  const text = await res.text();
  let body = null;
  try {
    body = JSON.parse(text);
  } catch {
    /* not JSON: reported below */
  }
  if (!res.ok || body === null) {
    throw new E2EError(`${what}: ${init?.method || "GET"} ${url} answered ${res.status}`, text.slice(0, 500));
  }
  return body;
}

/** The EHR registers a launch (HTTP Basic as the EHR client) and gets the URL to open. */
async function registerEhrLaunch(opts) {
  const basic = Buffer.from(`${encodeURIComponent(opts.ehrId)}:${encodeURIComponent(opts.ehrSecret)}`).toString("base64");
  const body = await fetchJson(
    `${opts.broker}/launch`,
    {
      method: "POST",
      headers: { authorization: `Basic ${basic}`, "content-type": "application/json" },
      body: JSON.stringify({
        client_id: opts.clientId,
        patient: EHR_PATIENT,
        encounter: "enc-1",
        need_patient_banner: false,
        user: EHR_USER,
      }),
    },
    "EHR launch registration",
  );
  if (typeof body.launch_url !== "string") {
    throw new E2EError("EHR launch registration: the answer has no launch_url", JSON.stringify(body));
  }
  return body.launch_url;
}

// ---------------------------------------------------------------------------------------------
// Driving the browser through the broker's pages like a user.

/**
 * Which page is showing: the app's result, one of the broker's three forms, or something else
 * ("other"); `parsed` says whether the document's HTML has been read yet.
 */
async function classify(page) {
  try {
    return await page.evaluate(() => {
      const parsed = document.readyState !== "loading";
      if (window.__result) return { kind: "result", parsed };
      // node-oidc-provider's sign-in page (tests/idp): an upstream identity provider.
      if (document.querySelector("input[name=login]")) return { kind: "upstream-signin", parsed };
      // SimpleSAMLphp's sign-in page (tests/saml-idp): a SAML identity provider.
      if (document.querySelector("input[name=username]") && location.pathname.includes("loginuserpass")) {
        return { kind: "saml-signin", parsed };
      }
      if (document.querySelector("input[name=password]")) return { kind: "signin", parsed };
      if (document.querySelector("input[type=radio][name=patient]")) return { kind: "picker", parsed };
      if (document.querySelector("button[name=decision][value=allow]")) return { kind: "consent", parsed };
      return { kind: "other", parsed };
    });
  } catch {
    return { kind: "other", parsed: false }; // mid-navigation: the document went away under us
  }
}

/** Runs `action` (which submits a form) and waits for the next document to load. */
async function submitAndWait(page, action) {
  const navigated = page.waitForEvent("framenavigated", { predicate: (f) => f === page.mainFrame() });
  await action();
  await navigated;
  await page.waitForLoadState("domcontentloaded");
}

async function pageText(page) {
  try {
    return (await page.locator("body").innerText({ timeout: 2000 })).replace(/\s+/g, " ").trim().slice(0, 600);
  } catch {
    return "(no page text)";
  }
}

/**
 * Opens `url` in a fresh browser context and answers the broker's pages until the app's callback
 * publishes its result. Records the pages seen and the raw token-endpoint answers.
 */
async function runFlow(browser, opts, name, url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const consoleErrors = [];
  const httpErrors = [];
  const tokenCalls = [];
  page.on("console", (m) => m.type() === "error" && consoleErrors.push(`${m.text()} (${m.location().url || "?"})`));
  page.on("pageerror", (e) => consoleErrors.push(`pageerror: ${e.message}`));
  page.on("requestfailed", (r) => httpErrors.push(`${r.method()} ${r.url()} failed: ${r.failure()?.errorText}`));
  // fhirclient merges a refresh answer into its old state; keep what the broker actually said.
  const recordToken = async (res) => {
    const req = res.request();
    const entry = { grant_type: new URLSearchParams(req.postData() || "").get("grant_type"), status: res.status() };
    entry.origin = (await req.allHeaders()).origin ?? null;
    try {
      const body = await res.json();
      Object.assign(entry, {
        keys: Object.keys(body).sort(),
        patient: body.patient ?? null,
        scope: body.scope ?? null,
        error: body.error ?? null,
      });
    } catch {
      entry.keys = null; // not JSON
    }
    tokenCalls.push(entry);
  };
  const recording = [];
  page.on("response", (res) => {
    if (res.status() >= 400) {
      // With the Origin header a POST carried: the broker's form checks depend on it.
      const req = res.request();
      const noted = req.method() === "POST" ? req.headerValue("origin").then((o) => ` (Origin: ${o ?? "none"})`) : Promise.resolve("");
      recording.push(noted.then((o) => httpErrors.push(`${res.status()} ${req.method()} ${res.url()}${o}`)));
    }
    if (res.request().method() === "POST" && res.url() === `${opts.broker}/token`) recording.push(recordToken(res));
  });

  const seen = []; // the broker's pages answered, in order
  const offered = {}; // what those pages offered: picker patients, consent scopes
  // An error with the page URL, a snippet of its text and what went wrong on the wire.
  const fail = async (why) => {
    await Promise.allSettled(recording);
    const lines = [`page URL: ${page.url()}`, `page text: ${await pageText(page)}`];
    if (consoleErrors.length) lines.push(`console errors:\n  ${consoleErrors.join("\n  ")}`);
    if (httpErrors.length) lines.push(`HTTP errors:\n  ${httpErrors.join("\n  ")}`);
    return new E2EError(`${name} launch: ${why}`, lines.join("\n"));
  };
  const shot = async (step) => {
    if (opts.screenshots) await page.screenshot({ path: path.join(opts.screenshots, `${name}-${step}.png`), fullPage: true });
  };

  try {
    await page.goto(url, { waitUntil: "domcontentloaded" });
    const deadline = Date.now() + opts.timeoutMs;
    for (;;) {
      if (Date.now() > deadline) throw await fail(`no result within ${opts.timeoutMs} ms`);
      const { kind, parsed } = await classify(page);
      if (kind === "result") break;
      if (kind === "other") {
        // A finished broker page that is none of the three forms is one of its error pages.
        if (parsed && page.url().startsWith(`${opts.broker}/`)) throw await fail("the broker showed an error page");
        await page.waitForTimeout(100); // redirects and fhirclient's async work still under way
        continue;
      }
      // The same form twice in a row means the broker refused the answer (wrong password, ...).
      if (seen.at(-1) === kind) throw await fail(`the ${kind} page came back`);
      seen.push(kind);
      await shot(kind);
      if (kind === "upstream-signin") {
        if (!opts.idpLogin) throw await fail("an upstream sign-in page appeared but --idp-login was not given");
        await page.locator("input[name=login]").fill(opts.idpLogin);
        await page.locator("input[name=password]").fill("any");
        await submitAndWait(page, () => page.locator("button[type=submit]").click());
      } else if (kind === "saml-signin") {
        if (!opts.idpLogin) throw await fail("a SAML sign-in page appeared but --idp-login was not given");
        const [user, password] = opts.idpLogin.split(":");
        await page.locator("input[name=username]").fill(user);
        await page.locator("input[name=password]").fill(password ?? "");
        await submitAndWait(page, () => page.locator("form [type=submit]").first().click());
      } else if (kind === "signin") {
        await page.getByLabel("Username").fill(opts.username);
        await page.getByLabel("Password").fill(opts.password);
        await submitAndWait(page, () => page.getByRole("button", { name: "Sign in" }).click());
      } else if (kind === "picker") {
        offered.picker_patients = await page.locator("input[name=patient]").evaluateAll((els) => els.map((e) => e.value));
        const choice = page.getByRole("radio", { name: new RegExp(`NHS number ${opts.patient}\\b`) });
        if ((await choice.count()) !== 1) throw await fail(`patient ${opts.patient} is not offered by the picker`);
        await choice.check();
        await submitAndWait(page, () => page.getByRole("button", { name: "Continue" }).click());
      } else if (kind === "consent") {
        offered.consent_scopes = await page.locator("input[name=scope]").evaluateAll((els) => els.map((e) => e.value));
        await submitAndWait(page, () => page.getByRole("button", { name: "Allow" }).click());
      }
    }
    const result = await page.evaluate(() => window.__result);
    await Promise.all(recording);
    if (!result.ok) throw await fail(`the app failed at ${result.stage}: ${result.error}`);
    const rawRefresh = tokenCalls.find((c) => c.grant_type === "refresh_token");
    return {
      ...result,
      refresh: { ...result.refresh, patient_in_response: rawRefresh ? rawRefresh.patient : null },
      pages_seen: seen,
      ...offered,
      final_url: page.url(),
      token_calls: tokenCalls,
      console_errors: consoleErrors,
      http_errors: httpErrors,
    };
  } finally {
    await context.close();
  }
}

// ---------------------------------------------------------------------------------------------

async function main() {
  const opts = options();
  if (!opts.ehrSecret && opts.ehrSecretFile) opts.ehrSecret = (await fs.readFile(opts.ehrSecretFile, "utf8")).trim();
  if (!opts.ehrSecret && opts.only !== "standalone" && !opts.serveOnly) throw new E2EError("--ehr-secret (or --ehr-secret-file) is required");
  if (opts.screenshots) await fs.mkdir(opts.screenshots, { recursive: true });

  // Fail early and plainly when the broker is not there.
  if (!opts.serveOnly) await fetchJson(`${opts.fhirBase}/.well-known/smart-configuration`, undefined, "discovery");

  const server = await startAppServer(opts);
  if (opts.serveOnly) {
    console.log(`demo SMART app on http://127.0.0.1:${opts.appPort}`);
    console.log(`standalone launch: http://127.0.0.1:${opts.appPort}/launch?iss=${encodeURIComponent(opts.fhirBase)}`);
    await new Promise(() => {}); // serve until the process is stopped
  }
  let browser;
  try {
    // launch() gives Chromium a fresh temporary --user-data-dir (Playwright refuses one in args)
    // and removes it on close; each flow then gets its own incognito-like context.
    browser = await chromium.launch({
      executablePath: opts.chromiumPath,
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
    });
    const out = {};
    if (opts.only !== "standalone") {
      const launchUrl = await registerEhrLaunch(opts);
      out.ehr = { launch_url: launchUrl, ...(await runFlow(browser, opts, "ehr", launchUrl)) };
    }
    if (opts.only !== "ehr") {
      const appLaunch = `http://127.0.0.1:${opts.appPort}/launch?iss=${encodeURIComponent(opts.fhirBase)}`;
      out.standalone = await runFlow(browser, opts, "standalone", appLaunch);
    }
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    await browser?.close();
    await new Promise((resolve) => server.close(resolve));
  }
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`smart_launch: ${e.message}\n${e.detail ? `${e.detail}\n` : ""}`);
    if (!(e instanceof E2EError)) process.stderr.write(`${e.stack}\n`);
    process.exit(1);
  },
);
