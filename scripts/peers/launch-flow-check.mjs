// Checks the launch peer (oidc-provider-launch.mjs) end to end and prints the exact requests a
// load generator has to send, then times 200 sequential rounds of each flow.
//
// Usage: node scripts/peers/launch-flow-check.mjs [--base http://127.0.0.1:9402] [--rounds 200]

import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    base: { type: 'string', default: 'http://127.0.0.1:9402' },
    rounds: { type: 'string', default: '200' },
  },
});
const base = args.base;
const rounds = Number(args.rounds);
const clientId = 'bench-app';
const redirectUri = 'http://127.0.0.1:9/callback';
const scope = 'openid offline_access patient/*.rs';

let quiet = false; // printing is switched off for the timed loops
const show = (line) => { if (!quiet) console.log(line); };

const jwtHeader = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[0], 'base64url'));
const jwtClaims = (jwt) => JSON.parse(Buffer.from(jwt.split('.')[1], 'base64url'));

// 1. Signed-in session: the two Set-Cookie values become one Cookie request header.
async function getSessionCookie() {
  show('POST /bench/session   (no body)');
  const res = await fetch(`${base}/bench/session`, { method: 'POST' });
  assert.equal(res.status, 204);
  const cookie = res.headers.getSetCookie().map((c) => c.split(';')[0]).join('; ');
  show(`  -> ${res.status}, Set-Cookie x2; send back as  Cookie: ${cookie}`);
  return cookie;
}

// 2. Authorization request with PKCE S256 and a nonce; the answer is a redirect carrying `code`.
async function authorize(cookie) {
  const verifier = randomBytes(32).toString('base64url'); // 43 chars
  const challenge = createHash('sha256').update(verifier).digest('base64url');
  const query = new URLSearchParams({
    response_type: 'code',
    client_id: clientId,
    redirect_uri: redirectUri,
    scope,
    state: randomBytes(8).toString('base64url'),
    nonce: randomBytes(8).toString('base64url'),
    code_challenge: challenge,
    code_challenge_method: 'S256',
  });
  const path = `/auth?${query}`;
  show(`GET ${path}\n  Cookie: ${cookie}`);
  const res = await fetch(base + path, { headers: { cookie }, redirect: 'manual' });
  await res.arrayBuffer();
  const location = res.headers.get('location');
  assert.ok([302, 303].includes(res.status), `expected a redirect, got ${res.status} ${location}`);
  const url = new URL(location);
  assert.equal(`${url.origin}${url.pathname}`, redirectUri, `redirected elsewhere: ${location}`);
  assert.equal(url.searchParams.get('state'), query.get('state'));
  const code = url.searchParams.get('code');
  assert.ok(code, `no code in ${location}`);
  show(`  -> ${res.status} Location: ${location}`);
  return { code, verifier, nonce: query.get('nonce') };
}

// POST /token with a form body; returns { status, body }.
async function token(form) {
  const body = new URLSearchParams(form).toString();
  show(`POST /token\n  Content-Type: application/x-www-form-urlencoded\n  body: ${body}`);
  const res = await fetch(`${base}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body,
  });
  const json = await res.json();
  show(`  -> ${res.status} ${JSON.stringify(Object.keys(json))}${json.error ? ` ${json.error}: ${json.error_description}` : ''}`);
  return { status: res.status, body: json };
}

// 3. Code exchange.
const exchange = ({ code, verifier }) => token({
  grant_type: 'authorization_code', code, redirect_uri: redirectUri, code_verifier: verifier, client_id: clientId,
});
// 4. Refresh.
const refresh = (refreshToken) => token({ grant_type: 'refresh_token', refresh_token: refreshToken, client_id: clientId });

// --- one checked pass, printing every request ---
const cookie = await getSessionCookie();
const auth = await authorize(cookie);
const issued = await exchange(auth);
assert.equal(issued.status, 200);
const { access_token: at, id_token: idt, refresh_token: rt } = issued.body;
assert.equal(jwtHeader(at).alg, 'ES256', 'access token alg');
assert.equal(jwtClaims(at).aud, `${base}/fhir`, 'access token aud');
assert.equal(jwtHeader(idt).alg, 'RS256', 'id token alg');
assert.equal(jwtClaims(idt).nonce, auth.nonce, 'id token nonce');
assert.ok(rt, 'refresh token issued');
console.log(`  access_token header ${JSON.stringify(jwtHeader(at))} scope "${jwtClaims(at).scope}"`);
console.log(`  id_token header ${JSON.stringify(jwtHeader(idt))} sub ${jwtClaims(idt).sub}`);

const refreshed = await refresh(rt);
assert.equal(refreshed.status, 200);
assert.ok(refreshed.body.refresh_token && refreshed.body.refresh_token !== rt, 'refresh token rotated');
assert.equal(jwtHeader(refreshed.body.access_token).alg, 'ES256');

console.log('reuse of the rotated refresh token (must fail):');
const reused = await refresh(rt);
assert.equal(reused.status, 400);
assert.equal(reused.body.error, 'invalid_grant');
// oidc-provider then revokes the whole grant: the newer refresh token is dead too.
const afterReuse = await refresh(refreshed.body.refresh_token);
assert.equal(afterReuse.status, 400, 'family revoked after reuse');
console.log('checks passed\n');

// --- timing: sequential rounds on one keep-alive connection pool, no printing ---
quiet = true;
const time = async (label, requestsPerRound, fn) => {
  const start = process.hrtime.bigint();
  for (let i = 0; i < rounds; i += 1) await fn();
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  console.log(`${label}: ${rounds} rounds in ${ms.toFixed(0)} ms`
    + ` (${(ms / rounds).toFixed(2)} ms/round, ${(ms / rounds / requestsPerRound).toFixed(2)} ms/request)`);
};
const cookie2 = await getSessionCookie(); // the reuse check above revoked the first grant
let current;
await time('launch  GET /auth + POST /token(code)', 2, async () => {
  const r = await exchange(await authorize(cookie2));
  assert.equal(r.status, 200);
  current = r.body.refresh_token;
});
await time('refresh POST /token(refresh_token)   ', 1, async () => {
  const r = await refresh(current);
  assert.equal(r.status, 200);
  current = r.body.refresh_token;
});
