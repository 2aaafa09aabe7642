#!/usr/bin/env node
// The NHS App journeys of patients and the people who care for them, in headless Chromium with
// the NHS App's user agent, against a running carebroker whose NHS login is a test provider:
//   --mode proxy    the jump-off signs in the proxy (the provider issues a composite token), the
//                   journey's app is launched with the patient in context, its authorization
//                   completes in the same browser and the token reads the patient's care plans.
//   --mode patient  the jump-off signs the patient in; they open "who has looked at my record",
//                   then "who sees my care plan", and keep the plan from --exclude (an ODS code).
// The journey's app lives at --app-origin and is never reached: the browser is followed until it
// asks for a URL there. Prints one JSON line with what it saw, or explains and exits 1.
//
// usage: node tests/e2e/patient_journeys.mjs --broker URL --mode proxy|patient --client-id ID
//          --app-origin https://viewer.example [--exclude ODS] [--screenshots DIR] [--chromium PATH]

import { createHash, randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const NHS_APP_UA = "Mozilla/5.0 (Linux; Android 14) AppleWebKit/537.36 Mobile Safari/537.36 nhsapp-android/2.40.0";

const { values: opts } = parseArgs({
  options: {
    broker: { type: "string", default: "http://127.0.0.1:8080" },
    mode: { type: "string" },
    "client-id": { type: "string" },
    "app-origin": { type: "string" },
    exclude: { type: "string", default: "B86011" },
    screenshots: { type: "string" },
    chromium: { type: "string", default: "/usr/bin/chromium" },
    timeout: { type: "string", default: "20000" },
  },
});
const broker = opts.broker.replace(/\/+$/, "");
const b64url = (bytes) => Buffer.from(bytes).toString("base64url");

async function shot(page, name) {
  if (opts.screenshots) await page.screenshot({ path: path.join(opts.screenshots, `${opts.mode}-${name}.png`), fullPage: true });
}

/**
 * Navigates to `url` and follows where the server sends the browser until it asks for a URL
 * under `prefix` (the journey's app, which does not exist here: its host does not resolve), and
 * returns that URL.
 */
async function followTo(page, url, prefix) {
  let reached;
  const seen = (request) => {
    if (!reached && request.url().startsWith(prefix)) reached = request.url();
  };
  page.on("request", seen);
  try {
    await page.goto(url).catch(() => {});
    for (let waited = 0; !reached && waited < Number(opts.timeout); waited += 100) await page.waitForTimeout(100);
    // let the browser finish failing to load the app, so the next navigation is not cut short
    await page.waitForLoadState("load").catch(() => {});
    for (let waited = 0; !page.url().startsWith("chrome-error:") && waited < 2000; waited += 50) await page.waitForTimeout(50);
  } finally {
    page.off("request", seen);
  }
  if (!reached) {
    await shot(page, "stopped");
    const text = await page.locator("body").innerText().catch(() => "");
    throw new Error(`the journey stopped at ${page.url()}: ${text.slice(0, 400)}`);
  }
  return new URL(reached);
}

/** Follows the jump-off until the journey's app is launched; the launch id. */
async function jumpOff(page) {
  const url = `${broker}/nhs-app/careplan?source=app&assertedLoginIdentity=eyJhbGciOiJSUzUxMiJ9.e30.sig`;
  return (await followTo(page, url, `${opts["app-origin"]}/launch`)).searchParams.get("launch");
}

async function proxy(page) {
  const launch = await jumpOff(page);
  const verifier = b64url(randomBytes(32));
  const redirect = `${opts["app-origin"]}/callback`;
  const authorize = new URL(`${broker}/authorize`);
  for (const [k, v] of Object.entries({
    response_type: "code", client_id: opts["client-id"], redirect_uri: redirect, state: "st-proxy", aud: `${broker}/fhir`,
    scope: "launch openid fhirUser patient/*.rs", launch,
    code_challenge: b64url(createHash("sha256").update(verifier).digest()), code_challenge_method: "S256",
  })) authorize.searchParams.set(k, v);
  const code = (await followTo(page, authorize.href, redirect)).searchParams.get("code");
  const token = await fetch(`${broker}/token`, {
    method: "POST",
    body: new URLSearchParams({ grant_type: "authorization_code", code, redirect_uri: redirect, code_verifier: verifier, client_id: opts["client-id"] }),
  }).then((r) => r.json());
  if (!token.access_token) throw new Error(`token: ${JSON.stringify(token)}`);
  const claims = JSON.parse(Buffer.from(token.access_token.split(".")[1], "base64url"));
  const plans = await fetch(`${broker}/fhir/CarePlan?patient=${token.patient}`, { headers: { authorization: `Bearer ${token.access_token}` } });
  return { patient: token.patient, fhir_user: claims.fhirUser, act: claims.act, plans: (await plans.json()).total };
}

async function patient(page) {
  await jumpOff(page);
  await page.goto(`${broker}/my-record/access-history`);
  await shot(page, "access-history");
  const history = {
    status: (await page.title()),
    text: await page.locator("main").innerText(),
    header: await page.locator(".nhsuk-header").count(),
    back: await page.locator("a.nhsuk-back-link__link").getAttribute("href"),
  };
  await page.goto(`${broker}/my-record/sharing`);
  await page.fill("#organisation", opts.exclude);
  await shot(page, "sharing-form");
  await Promise.all([page.waitForURL(`${broker}/my-record/sharing`), page.click("form:has(#organisation) button")]);
  await shot(page, "sharing-saved");
  const sharing = { text: await page.locator("main").innerText() };
  return { history, sharing };
}

async function main() {
  if (opts.screenshots) await fs.mkdir(opts.screenshots, { recursive: true });
  const browser = await chromium.launch({
    executablePath: opts.chromium,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  try {
    const context = await browser.newContext({ userAgent: NHS_APP_UA });
    context.setDefaultTimeout(Number(opts.timeout));
    const page = await context.newPage();
    const out = opts.mode === "proxy" ? await proxy(page) : await patient(page);
    process.stdout.write(`${JSON.stringify(out)}\n`);
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  process.stderr.write(`patient_journeys: ${e.stack ?? e}\n`);
  process.exit(1);
});
