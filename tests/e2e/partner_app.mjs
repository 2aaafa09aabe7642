#!/usr/bin/env node
// A partner app as a real OpenID-certified relying party (panva's openid-client) drives
// carebroker: an EHR registers a launch for it, it pushes its authorization request (PAR,
// RFC 9126), redeems the code with a DPoP-bound token (RFC 9449), reads the patient over DPoP,
// then exchanges that token (RFC 8693) for a narrower DPoP-bound one (proving the same key) and
// reads again. With --idp, it also signs its user in at that OpenID provider itself (as its own
// relying party: authorization code + PKCE + nonce, the provider's test session standing in for
// the user), has the EHR register a launch for that user by the same ID token, exchanges the ID
// token with the launch for a patient-scoped DPoP-bound token and reads the patient's care plans.
// Prints one JSON line with what it saw, or explains and exits 1.
//
// usage: node tests/e2e/partner_app.mjs --broker URL --client-id ID --client-secret S
//          --redirect-uri URI --ehr-id ID --ehr-secret S --patient NHS_NUMBER
//          [--idp ISSUER --idp-root URL --idp-client-id ID --idp-client-secret S --idp-redirect-uri URI]

import { parseArgs } from "node:util";
import * as client from "openid-client";

const { values: opts } = parseArgs({
  options: {
    broker: { type: "string", default: "http://127.0.0.1:8080" },
    "client-id": { type: "string" },
    "client-secret": { type: "string" },
    "redirect-uri": { type: "string" },
    "ehr-id": { type: "string" },
    "ehr-secret": { type: "string" },
    patient: { type: "string", default: "9434765919" },
    idp: { type: "string" },
    "idp-root": { type: "string" },
    "idp-client-id": { type: "string" },
    "idp-client-secret": { type: "string" },
    "idp-redirect-uri": { type: "string" },
  },
});
const broker = opts.broker.replace(/\/+$/, "");
const fhirBase = `${broker}/fhir`;

// The EHR registers a launch for this app: its user as the EHR asserts them, or as an ID token.
async function registerLaunch(idToken) {
  const basic = Buffer.from(`${opts["ehr-id"]}:${opts["ehr-secret"]}`).toString("base64");
  const user = idToken
    ? { id_token: idToken }
    : { user: { sub: "u-1", name: "Nadia Nurse", fhir_user: "Practitioner/pr-nurse-1", role_codes: ["R8001"], org: "A9A5A" } };
  const response = await fetch(`${broker}/launch`, {
    method: "POST",
    headers: { "content-type": "application/json", authorization: `Basic ${basic}` },
    body: JSON.stringify({ client_id: opts["client-id"], patient: opts.patient, ...user }),
  });
  if (response.status !== 201) throw new Error(`launch: ${response.status} ${await response.text()}`);
  return (await response.json()).launch;
}

async function read(config, token, dpop) {
  const response = await client.fetchProtectedResource(config, token, new URL(`${fhirBase}/Patient/${opts.patient}`), "GET", undefined, undefined, { DPoP: dpop });
  return { status: response.status, id: response.ok ? (await response.json()).id : undefined };
}

async function main() {
  const config = await client.discovery(new URL(broker), opts["client-id"], undefined, client.ClientSecretPost(opts["client-secret"]), {
    execute: [client.allowInsecureRequests],
  });
  const meta = config.serverMetadata();
  const out = { par_endpoint: meta.pushed_authorization_request_endpoint, dpop_algs: meta.dpop_signing_alg_values_supported };

  // 1. PAR + authorization code with PKCE, the token bound to a DPoP key
  const launch = await registerLaunch();
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const dpop = client.getDPoPHandle(config, await client.randomDPoPKeyPair("ES256"));
  const url = await client.buildAuthorizationUrlWithPAR(
    config,
    {
      redirect_uri: opts["redirect-uri"],
      scope: "launch patient/*.rs",
      code_challenge: await client.calculatePKCECodeChallenge(verifier),
      code_challenge_method: "S256",
      state,
      aud: fhirBase,
      launch,
    },
    { DPoP: dpop },
  );
  out.request_uri = url.searchParams.get("request_uri");
  const authorize = await fetch(url, { redirect: "manual" });
  const location = authorize.headers.get("location");
  if (!location) throw new Error(`authorize: ${authorize.status} ${await authorize.text()}`);
  const tokens = await client.authorizationCodeGrant(config, new URL(location), { pkceCodeVerifier: verifier, expectedState: state }, undefined, {
    DPoP: dpop,
  });
  out.code = { token_type: tokens.token_type, patient: tokens.patient, scope: tokens.scope };
  out.code_read = await read(config, tokens.access_token, dpop);

  // 2. token exchange: narrower; the bound subject token is exchanged only with a proof of its key
  const dpop2 = client.getDPoPHandle(config, await client.randomDPoPKeyPair("ES256"));
  out.exchange_other_key = await client
    .genericGrantRequest(
      config,
      "urn:ietf:params:oauth:grant-type:token-exchange",
      { subject_token: tokens.access_token, subject_token_type: "urn:ietf:params:oauth:token-type:access_token" },
      { DPoP: dpop2 },
    )
    .then(() => "issued", (e) => e.error ?? e.code ?? String(e));
  const exchanged = await client.genericGrantRequest(
    config,
    "urn:ietf:params:oauth:grant-type:token-exchange",
    {
      subject_token: tokens.access_token,
      subject_token_type: "urn:ietf:params:oauth:token-type:access_token",
      scope: "patient/Patient.rs",
      resource: fhirBase,
    },
    { DPoP: dpop },
  );
  out.exchange = { token_type: exchanged.token_type, issued_token_type: exchanged.issued_token_type, scope: exchanged.scope, patient: exchanged.patient };
  out.exchange_read = await read(config, exchanged.access_token, dpop);
  // proofs by another key are refused
  out.exchange_read_wrong_key = await read(config, exchanged.access_token, dpop2).catch((e) => ({ status: e.status ?? 401, error: e.code ?? String(e) }));
  if (opts.idp) out.id_token_exchange = await exchangeIdToken(config);
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

// 3. The app's own sign-in at an upstream provider, then an ID-token exchange with an EHR launch.
async function exchangeIdToken(config) {
  const idp = await client.discovery(new URL(opts.idp), opts["idp-client-id"], undefined, client.ClientSecretBasic(opts["idp-client-secret"]), {
    execute: [client.allowInsecureRequests],
  });
  const session = await fetch(`${opts["idp-root"]}/test/session?scope=openid+profile`, { method: "POST" });
  if (session.status !== 204) throw new Error(`idp session: ${session.status}`);
  const cookie = session.headers.getSetCookie().map((c) => c.split(";")[0]).join("; ");
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(idp, {
    redirect_uri: opts["idp-redirect-uri"],
    scope: "openid profile",
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
    state,
    nonce,
  });
  // follow the provider's own hops (it may resume the authorization) until it sends the code to us
  let next = url.href;
  for (let hop = 0; hop < 5 && !next.startsWith(opts["idp-redirect-uri"]); hop += 1) {
    const reply = await fetch(next, { redirect: "manual", headers: { cookie } });
    const location = reply.headers.get("location");
    if (!location) throw new Error(`idp authorize: ${reply.status} ${await reply.text()}`);
    next = new URL(location, next).href;
  }
  const signedIn = await client.authorizationCodeGrant(idp, new URL(next), { pkceCodeVerifier: verifier, expectedState: state, expectedNonce: nonce });
  const idToken = signedIn.id_token;
  const out = { idp_sub: signedIn.claims().sub };

  const launch = await registerLaunch(idToken);
  const dpop = client.getDPoPHandle(config, await client.randomDPoPKeyPair("ES256"));
  const exchange = (extra) => client.genericGrantRequest(
    config,
    "urn:ietf:params:oauth:grant-type:token-exchange",
    { subject_token: idToken, subject_token_type: "urn:ietf:params:oauth:token-type:id_token", scope: "patient/CarePlan.rs", ...extra },
    { DPoP: dpop },
  );
  const exchanged = await exchange({ launch });
  out.exchange = { token_type: exchanged.token_type, issued_token_type: exchanged.issued_token_type, scope: exchanged.scope, patient: exchanged.patient };
  const plans = await client.fetchProtectedResource(config, exchanged.access_token, new URL(`${fhirBase}/CarePlan?patient=${opts.patient}`), "GET", undefined, undefined, { DPoP: dpop });
  const bundle = plans.ok ? await plans.json() : {};
  out.care_plans = { status: plans.status, subjects: (bundle.entry ?? []).map((e) => e.resource.subject?.reference) };
  // the launch was single use
  out.launch_again = await exchange({ launch }).then(() => "issued", (e) => e.error ?? e.code ?? String(e));
  return out;
}

main().catch((e) => {
  process.stderr.write(`partner_app: ${e.stack ?? e}\n${e.cause ? JSON.stringify(e.cause) : ""}\n`);
  process.exit(1);
});
