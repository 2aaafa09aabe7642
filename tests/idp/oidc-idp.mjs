// Upstream OpenID Provider for carebroker's federation tests (carebroker is the relying party).
// node-oidc-provider on loopback, in one of three profiles:
//   plain      generic OP: issuer http://127.0.0.1:P, default oidc-provider paths,
//              client_secret_basic, RS256 ID tokens, account `alice` (sub alice-1).
//   cis2       NHS CIS2 (ForgeRock AM) look-alike: issuer and endpoints under
//              /openam/oauth2/realms/root/realms/NHSIdentity/realms/Healthcare, private_key_jwt
//              (with --client-jwks) or client_secret_basic, account 555057896106 with
//              acr/amr/assurance claims in the ID token and RBAC claims from userinfo.
//   nhs_login  NHS login look-alike: private_key_jwt (RS512 assertions) required, RS512 ID
//              tokens, `vtr` -> `vot`, `asserted_login_identity` silent sign-in. An asserted
//              identity of `proxy-for:<NHS number>` signs the account in as that patient's proxy:
//              the ID token is then a composite token as the national proxy service describes it
//              (the patient's NHS number and demographics as the subject's, the signed-in proxy
//              in `act`; docs/proxy-access.md).
//
// Usage:
//   NODE_ENV=production node tests/idp/oidc-idp.mjs --port P --profile plain|cis2|nhs_login \
//     --client-id ID --redirect-uri URI [--client-secret S] [--client-jwks FILE] \
//     [--backchannel-logout-uri URI] [--post-logout-redirect-uri URI]
// Once ready, prints exactly one line to stdout: `listening <issuer>` (--port 0 picks a free
// port; read it from the issuer). Everything else (oidc-provider notices, errors) goes to stderr.
//
// Test-only routes, at the server root (outside the provider's routes):
//   POST /test/session[?scope=...]  -> 204 + Set-Cookie (_session, _session.sig): a signed-in
//        session for the profile's account with a grant for the client (default: every scope
//        the profile knows). Send the cookies on the next authorization request and it
//        redirects straight to redirect_uri with `code`, with no UI (one prompt=login is
//        also let through, as if the user had just signed in).
//   POST /test/logout -> 200 JSON: ends the account's most recent session; if a back-channel
//        logout URI is registered, POSTs a logout_token there first and reports the RP's status.
//
// Interactive sign-in (headless browser): oidc-provider's devInteractions pages. The login
// form's `login` field takes the account id (any password); consent is granted automatically.

import { AsyncLocalStorage } from 'node:async_hooks';
import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parse as parseQuery } from 'node:querystring';
import { parseArgs } from 'node:util';

import Provider, { errors, interactionPolicy } from 'oidc-provider';

// stdout carries only the `listening` line; oidc-provider prints its notices with console.info.
console.info = console.log = (...args) => console.error(...args);

const fail = (message) => {
  console.error(`oidc-idp: ${message}`);
  process.exit(2);
};

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    profile: { type: 'string', default: 'plain' },
    'client-id': { type: 'string' },
    'redirect-uri': { type: 'string' },
    'client-secret': { type: 'string' },
    'client-jwks': { type: 'string' },
    'backchannel-logout-uri': { type: 'string' },
    'post-logout-redirect-uri': { type: 'string' },
  },
});
for (const required of ['port', 'client-id', 'redirect-uri']) {
  if (!args[required]) fail(`--${required} is required`);
}

if (!/^\d+$/.test(args.port)) fail('--port must be a number (0: any free port)');
const clientId = args['client-id'];

// ---------------------------------------------------------------------------------------------
// Profiles: where the provider is mounted, how the client authenticates, the one account and
// which claims it releases (per scope, and per use: 'id_token' or 'userinfo').

const CIS2_PREFIX = '/openam/oauth2/realms/root/realms/NHSIdentity/realms/Healthcare';

// NHS login vectors of trust: "P9.Cp.Cd" = identity proofing level 9, credentials password +
// device. The test account satisfies any requested vector at or below its level whose
// credential components it has.
const NHS_ACCOUNT_LEVEL = 9;
const NHS_ACCOUNT_CREDENTIALS = new Set(['Cp', 'Cd']);
const NHS_DEFAULT_VOT = 'P9.Cp.Cd'; // when the request carries no vtr

// Returns the first vector in the `vtr` JSON array that the account satisfies; throws
// invalid_request for a malformed vtr and access_denied if none can be satisfied.
function votFor(vtr) {
  if (vtr === undefined) return NHS_DEFAULT_VOT;
  let vectors;
  try {
    vectors = JSON.parse(vtr);
  } catch {
    throw new errors.InvalidRequest('vtr must be a JSON array of vectors of trust');
  }
  if (!Array.isArray(vectors) || vectors.length === 0
      || !vectors.every((v) => typeof v === 'string' && /^P\d+(\.C[a-z]+)+$/.test(v))) {
    throw new errors.InvalidRequest('vtr must be a non-empty JSON array like ["P9.Cp.Cd"]');
  }
  const satisfied = vectors.find((vector) => {
    const [level, ...credentials] = vector.split('.');
    return Number(level.slice(1)) <= NHS_ACCOUNT_LEVEL
      && credentials.every((c) => NHS_ACCOUNT_CREDENTIALS.has(c));
  });
  if (!satisfied) {
    throw new errors.AccessDenied('none of the requested vectors of trust can be met');
  }
  return satisfied;
}

// The account id of a composite (proxy) sign-in: this prefix, then the patient's NHS number.
const COMPOSITE = 'composite:';

const profiles = {
  plain: () => ({
    mount: '',
    routes: {},
    idTokenAlg: 'RS256',
    clientAuth: 'client_secret_basic',
    account: { sub: 'alice-1', logins: ['alice', 'alice-1'] },
    claims: {
      openid: ['sub', 'auth_time'],
      profile: ['name', 'email', 'email_verified', 'fhirUser', 'org', 'roles'],
      email: ['email', 'email_verified'],
    },
    accountClaims: () => ({
      name: 'Alice Example',
      email: 'alice@example.test',
      email_verified: true,
      fhirUser: 'Practitioner/pr-alice',
      org: 'A9A5A',
      roles: ['R8000'],
    }),
  }),

  cis2: () => ({
    mimicsNhs: true,
    mount: CIS2_PREFIX,
    routes: {
      authorization: '/authorize',
      token: '/access_token',
      userinfo: '/userinfo',
      jwks: '/connect/jwk_uri',
      end_session: '/connect/endSession',
    },
    idTokenAlg: 'RS256',
    clientAuth: args['client-jwks'] ? 'private_key_jwt' : 'client_secret_basic',
    clientAssertionAlgs: ['RS256', 'RS512', 'ES256'],
    acrValues: ['AAL3_ANY', 'AAL2_OR_ABOVE', 'AAL2_OR_ABOVE_WITH_PROOFING', 'AAL1_OR_ABOVE'],
    // What a smartcard sign-in records on the session; they become the ID token's acr/amr.
    account: { sub: '555057896106', logins: ['555057896106'], acr: 'AAL3_ANY', amr: ['N3_SMARTCARD'] },
    claims: {
      openid: ['sub', 'acr', 'amr', 'auth_time', 'authentication_assurance_level', 'id_assurance_level'],
      selectedrole: ['selected_roleid'],
      profile: ['uid', 'name', 'given_name', 'family_name', 'nhsid_useruid', 'idassurancelevel'],
      nationalrbacaccess: ['uid', 'nhsid_useruid', 'nhsid_nrbac_roles'],
      associatedorgs: ['uid', 'nhsid_useruid', 'nhsid_user_orgs'],
      nhsperson: ['uid', 'nhsid_useruid', 'idassurancelevel', 'name', 'given_name', 'family_name'],
    },
    accountClaims: (use) => (use === 'id_token'
      ? {
        authentication_assurance_level: '3',
        id_assurance_level: 3,
        selected_roleid: '555254242102', // released only with scope `selectedrole`
      }
      : {
        uid: '555057896106',
        name: 'Nurse Test',
        given_name: 'Nurse',
        family_name: 'Test',
        nhsid_useruid: '555057896106',
        idassurancelevel: '3',
        nhsid_user_orgs: [
          { org_code: 'A9A5A', org_name: 'ST ELSEWHERE' },
          { org_code: 'AB12', org_name: 'LAVENDER TOWN HEALTH' },
        ],
        nhsid_nrbac_roles: [
          {
            person_orgid: '1111222233334444',
            person_roleid: '555254242102',
            org_code: 'A9A5A',
            role_name: '"Clinical":"Clinical Provision":"Nurse Access Role"',
            role_code: 'S8000:G8000:R8001',
            activities: ['View Detailed Health Records'],
            activity_codes: ['B0360'],
          },
          {
            person_orgid: '1234123412341234',
            person_roleid: '555254242199',
            org_code: 'AB12',
            role_name: '"Clinical":"Clinical Provision":"Healthcare Student Access Role"',
            role_code: 'S8000:G8000:R8004',
            activities: [],
            activity_codes: [],
          },
        ],
      }),
  }),

  nhs_login: () => ({
    mimicsNhs: true,
    mount: '',
    routes: {},
    idTokenAlg: 'RS512',
    clientAuth: 'private_key_jwt',
    clientAssertionAlgs: ['RS512'],
    account: { sub: 'nhslogin-8dc9fc1d', logins: ['nhslogin-8dc9fc1d', '9434765919'] },
    claims: {
      openid: ['sub', 'auth_time', 'vot', 'vtm', 'act'],
      profile: ['nhs_number', 'family_name', 'birthdate', 'identity_proofing_level'],
    },
    accountClaims: (use, ctx) => ({
      nhs_number: '9434765919',
      identity_proofing_level: 'P9',
      birthdate: '1942-03-14',
      family_name: 'PATIENT',
      vot: votOfToken(ctx),
      vtm: `${origin}/trustmark/127.0.0.1`,
    }),
    // Custom authorization parameters, validated (in this order) on every authorization request.
    extraParams: {
      vtr(ctx, value) {
        votFor(value); // rejects malformed or unsatisfiable requests before any UI
      },
      // NHS login SSO hand-over: any non-empty value signs the account in silently (so
      // prompt=none succeeds without a session); the literal `expired` is refused.
      asserted_login_identity(ctx, value) {
        if (!value) return;
        if (value === 'expired') {
          throw new errors.CustomOIDCProviderError('sso_login_required', 'asserted login identity has expired');
        }
        const patient = value.startsWith('proxy-for:') ? value.slice('proxy-for:'.length) : null;
        if (patient !== null && !/^\d{10}$/.test(patient)) {
          throw new errors.InvalidRequest('proxy-for: needs a 10-digit NHS number');
        }
        ctx.oidc.session.loginAccount({ accountId: patient ? `${COMPOSITE}${patient}` : profile.account.sub });
      },
    },
  }),
};

if (!Object.hasOwn(profiles, args.profile)) fail(`unknown --profile ${args.profile} (plain|cis2|nhs_login)`);
const profile = profiles[args.profile]();

if (profile.clientAuth === 'client_secret_basic' && !args['client-secret']) {
  fail(`--client-secret is required for ${args.profile} without --client-jwks`);
}
if (profile.clientAuth === 'private_key_jwt' && !args['client-jwks']) {
  fail(`--client-jwks is required for ${args.profile}`);
}

// Listen first, so `--port 0` works: the issuer needs the real port. Requests are answered
// only once everything below is set up (`app` is replaced at the end of this module).
let app = (req, res) => { res.statusCode = 503; res.end(); };
const server = createServer((req, res) => app(req, res));
const port = await new Promise((resolve) => {
  server.once('error', (err) => fail(`cannot listen on 127.0.0.1:${args.port}: ${err.message}`));
  server.listen(Number(args.port), '127.0.0.1', () => resolve(server.address().port));
});
const origin = `http://127.0.0.1:${port}`;
const issuer = `${origin}${profile.mount}`;

// vot travels with the authorization: remembered per authorization code when the code is
// issued, then copied into the access token (extraTokenClaims) for userinfo.
const votByCode = new Map(); // code jti -> vot (dropped when the code is exchanged or stale)
function votOfToken(ctx) {
  const { AuthorizationCode: code, AccessToken: at } = ctx?.oidc?.entities ?? {};
  if (code) return votByCode.get(code.jti);
  return at?.extra?.vot;
}

// ---------------------------------------------------------------------------------------------
// Storage: one Map with per-entry expiry for every oidc-provider model.

const store = new Map(); // `${model}:${id}` -> { payload, expiresAt }
const live = (entry) => entry && entry.expiresAt > Date.now();

class TtlMapAdapter {
  constructor(model) { this.model = model; }

  async upsert(id, payload, expiresIn) {
    const expiresAt = expiresIn ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(`${this.model}:${id}`, { payload, expiresAt });
  }

  async find(id) {
    const entry = store.get(`${this.model}:${id}`);
    return live(entry) ? entry.payload : undefined;
  }

  async findByUid(uid) { // Session lookup for interactions
    for (const [key, entry] of store) {
      if (key.startsWith(`${this.model}:`) && live(entry) && entry.payload.uid === uid) return entry.payload;
    }
    return undefined;
  }

  async findByUserCode() { return undefined; } // device flow is not enabled

  async consume(id) {
    const entry = store.get(`${this.model}:${id}`);
    if (entry) entry.payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(`${this.model}:${id}`); }

  async revokeByGrantId(grantId) {
    for (const [key, entry] of store) {
      if (key.startsWith(`${this.model}:`) && entry.payload.grantId === grantId) store.delete(key);
    }
  }
}

// Drop a grant and every token issued under it (what ending a session does to its grants).
function dropGrant(grantId) {
  store.delete(`Grant:${grantId}`);
  for (const [key, entry] of store) if (entry.payload.grantId === grantId) store.delete(key);
}

setInterval(() => {
  for (const [key, entry] of store) if (!live(entry)) store.delete(key);
  for (const jti of votByCode.keys()) if (!store.has(`AuthorizationCode:${jti}`)) votByCode.delete(jti);
}, 30_000).unref();

// ---------------------------------------------------------------------------------------------
// Keys and the one client.

// Fresh provider signing key per run; its alg pins the ID token algorithm.
const signingKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
const jwks = {
  keys: [{ ...signingKey.export({ format: 'jwk' }), kid: `idp-${profile.idTokenAlg.toLowerCase()}`, alg: profile.idTokenAlg, use: 'sig' }],
};

// The client's public keys for private_key_jwt; private members are dropped if the file has them.
function readClientJwks(file) {
  const PRIVATE = ['d', 'p', 'q', 'dp', 'dq', 'qi', 'k', 'oth'];
  let parsed;
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    fail(`cannot read --client-jwks ${file}: ${err.message}`);
  }
  const keys = parsed.keys ?? [parsed];
  return { keys: keys.map((k) => Object.fromEntries(Object.entries(k).filter(([name]) => !PRIVATE.includes(name)))) };
}

const client = {
  client_id: clientId,
  redirect_uris: [args['redirect-uri']],
  response_types: ['code'],
  grant_types: ['authorization_code'],
  token_endpoint_auth_method: profile.clientAuth,
  id_token_signed_response_alg: profile.idTokenAlg,
  ...(profile.clientAuth === 'private_key_jwt'
    ? { jwks: readClientJwks(args['client-jwks']) }
    : { client_secret: args['client-secret'] }),
  ...(args['backchannel-logout-uri'] && {
    backchannel_logout_uri: args['backchannel-logout-uri'],
    backchannel_logout_session_required: true,
  }),
  ...(args['post-logout-redirect-uri'] && { post_logout_redirect_uris: [args['post-logout-redirect-uri']] }),
};

// ---------------------------------------------------------------------------------------------
// Provider.

// Every scope the profile knows: the keys of its claims table.
const scopes = ['openid', ...Object.keys(profile.claims).filter((s) => s !== 'openid')];

const ttl = {
  AccessToken: 600,
  AuthorizationCode: 120,
  IdToken: 600,
  Interaction: 900,
  Session: 3600,
  Grant: 3600,
  RefreshToken: 86_400,
};

// Sessions made by POST /test/session count as "just signed in" for one prompt=login.
const freshSessions = new Set(); // session uid

const { Check } = interactionPolicy;
const policy = interactionPolicy.base();
const loginPrompt = policy.get('login');
const builtinLoginPrompt = loginPrompt.checks.get('login_prompt');
loginPrompt.checks.remove('login_prompt');
loginPrompt.checks.add(new Check('login_prompt', builtinLoginPrompt.description, builtinLoginPrompt.error, (ctx) => {
  const wanted = builtinLoginPrompt.check(ctx);
  if (wanted && freshSessions.delete(ctx.oidc.session.uid)) return Check.NO_NEED_TO_PROMPT;
  return wanted;
}), 0);

// Outgoing back-channel logout calls, recorded per /test/logout request.
const outbound = new AsyncLocalStorage();

const configuration = {
  adapter: TtlMapAdapter,
  clients: [client],
  jwks,
  routes: profile.routes,
  scopes,
  claims: profile.claims,
  acrValues: profile.acrValues ?? [],
  extraParams: profile.extraParams ?? [],
  responseTypes: ['code'],
  clientAuthMethods: [profile.clientAuth],
  enabledJWA: {
    idTokenSigningAlgValues: [profile.idTokenAlg],
    clientAuthSigningAlgValues: profile.clientAssertionAlgs ?? ['RS256'],
  },
  pkce: { required: () => true }, // S256 only (oidc-provider 9 supports nothing else)
  conformIdTokenClaims: false, // scope claims may go into the ID token (profiles choose per use)
  ttl,
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  clientBasedCORS: () => false,

  findAccount(ctx, id) {
    if (args.profile === 'nhs_login' && id.startsWith(COMPOSITE)) {
      // a composite token: the patient's NHS number and demographics, the proxy (this account) in act
      const patient = id.slice(COMPOSITE.length);
      return {
        accountId: id,
        claims: (use) => ({
          ...profile.accountClaims(use, ctx),
          sub: id,
          nhs_number: patient,
          family_name: 'CARED-FOR',
          birthdate: '1931-11-23',
          act: { sub: profile.account.sub, nhs_number: '9434765919', given_name: 'Peter', family_name: 'PATIENT' },
        }),
      };
    }
    if (id !== profile.account.sub) return undefined;
    return {
      accountId: id,
      claims: (use) => ({ sub: id, ...profile.accountClaims(use, ctx) }),
    };
  },

  // Consent is implicit: the grant stored on the session is topped up with whatever this
  // authorization asks for, so a browser only ever sees the login page.
  async loadExistingGrant(ctx) {
    const { oidc } = ctx;
    const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    const grant = (grantId && await oidc.provider.Grant.find(grantId))
      || new oidc.provider.Grant({ accountId: oidc.account.accountId, clientId: oidc.client.clientId });
    grant.addOIDCScope([...oidc.requestParamOIDCScopes].join(' '));
    if (oidc.requestParamClaims.size) grant.addOIDCClaims([...oidc.requestParamClaims]);
    await grant.save();
    return grant;
  },

  extraTokenClaims(ctx) {
    const vot = args.profile === 'nhs_login' ? votOfToken(ctx) : undefined;
    return vot ? { vot } : undefined;
  },

  // oidc-provider refuses to call special-use addresses (loopback included) from its own
  // fetch; the RP's back-channel logout endpoint is on loopback, so call it plainly, and
  // record the exchange for /test/logout.
  async fetch(url, { dispatcher, ...options }) {
    const response = await globalThis.fetch(url, options);
    outbound.getStore()?.push({
      url: String(url),
      status: response.status,
      logout_token: new URLSearchParams(String(options.body ?? '')).get('logout_token'),
    });
    return response;
  },

  interactions: { policy },
  features: {
    devInteractions: { enabled: true }, // login + consent pages; not disabled by NODE_ENV
    backchannelLogout: { enabled: Boolean(args['backchannel-logout-uri']) },
    rpInitiatedLogout: { enabled: true },
    // The NHS services advertise neither PAR nor DPoP; keep oidc-provider's defaults for plain.
    pushedAuthorizationRequests: { enabled: !profile.mimicsNhs },
    dPoP: { enabled: !profile.mimicsNhs },
  },
};

const provider = new Provider(issuer, configuration);

provider.on('server_error', (ctx, err) => console.error('server_error', err));
for (const event of ['authorization.error', 'grant.error', 'userinfo.error', 'end_session.error', 'backchannel.error']) {
  provider.on(event, (ctx, err) => console.error(event, err.error ?? '', err.error_description ?? err.message, err.error_detail ?? ''));
}
provider.on('authorization.success', (ctx) => {
  const code = ctx.oidc.entities.AuthorizationCode;
  if (code && args.profile === 'nhs_login') votByCode.set(code.jti, votFor(ctx.oidc.params.vtr));
});

// ---------------------------------------------------------------------------------------------
// Test routes and the login form handler.

function sendJson(res, status, body) {
  res.statusCode = status;
  res.setHeader('content-type', 'application/json');
  res.end(`${JSON.stringify(body)}\n`);
}

async function readForm(req) {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  return parseQuery(Buffer.concat(chunks).toString('utf8'));
}

// What the account's sign-in records on the session (acr/amr feed the ID token).
const loginDetails = () => ({ accountId: profile.account.sub, acr: profile.account.acr, amr: profile.account.amr });

// POST /test/session[?scope=a+b]: the state a completed login + consent would leave behind.
async function testSession(req, res) {
  const scope = new URL(req.url, origin).searchParams.get('scope') || scopes.join(' ');
  const grant = new provider.Grant({ accountId: profile.account.sub, clientId });
  grant.addOIDCScope(scope);
  const grantId = await grant.save();

  const session = new provider.Session();
  session.loginAccount(loginDetails());
  session.ensureClientContainer(clientId);
  session.grantIdFor(clientId, grantId);
  await session.save(ttl.Session);
  freshSessions.add(session.uid);

  // Set through oidc-provider's cookie jar so the cookie is signed exactly like its own.
  provider.createContext(req, res).cookies.set(provider.cookieName('session'), session.id, {
    httpOnly: true,
    sameSite: 'lax',
    expires: new Date(session.exp * 1000),
  });
  res.statusCode = 204;
  res.end();
}

// POST /test/logout: end the account's most recent session, as the OP's own logout would.
async function testLogout(req, res) {
  let latest;
  for (const [key, entry] of store) {
    if (key.startsWith('Session:') && live(entry) && entry.payload.accountId === profile.account.sub
        && (!latest || entry.payload.loginTs >= latest.loginTs)) latest = entry.payload;
  }
  if (!latest) {
    sendJson(res, 404, { error: 'no_session', error_description: `no live session for ${profile.account.sub}` });
    return;
  }
  const session = await provider.Session.find(latest.jti);
  const authorization = session.authorizations?.[clientId] ?? {};
  const report = {
    sub: session.accountId,
    sid: authorization.sid ?? null,
    session_ended: false,
    backchannel_logout: null,
  };

  const registered = await provider.Client.find(clientId);
  if (registered.backchannelLogoutUri && authorization.sid) {
    const calls = [];
    let error = null;
    try {
      await outbound.run(calls, () => registered.backchannelLogout(session.accountId, authorization.sid));
    } catch (err) {
      error = err.message;
    }
    report.backchannel_logout = {
      uri: registered.backchannelLogoutUri,
      status: calls[0]?.status ?? null, // the RP's HTTP status (null: no response at all)
      accepted: error === null, // oidc-provider accepts 200 or 204
      error,
      logout_token: calls[0]?.logout_token ?? null,
    };
  }

  for (const { grantId } of Object.values(session.authorizations ?? {})) if (grantId) dropGrant(grantId);
  freshSessions.delete(session.uid);
  await session.destroy();
  report.session_ended = true;
  sendJson(res, 200, report);
}

// POST {mount}/interaction/:uid while the login prompt is pending: accept only the profile's
// account (any password), record the profile's acr/amr, and go back to the authorization.
// A wrong login shows the form again. Everything else (consent form) goes to devInteractions.
async function submitLogin(req, res, next) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch {
    return next(); // let oidc-provider render the error
  }
  if (details.prompt.name !== 'login') return next();
  const form = await readForm(req);
  if (form.prompt !== 'login' || !profile.account.logins.includes(form.login)) {
    res.statusCode = 303;
    res.setHeader('location', req.originalUrl ?? req.url);
    res.end();
    return undefined;
  }
  return provider.interactionFinished(req, res, { login: loginDetails() }, { mergeWithLastSubmission: false });
}

// ---------------------------------------------------------------------------------------------
// Server.

const handle = provider.callback();
const guard = (fn) => (req, res) => fn(req, res).catch((err) => {
  console.error('oidc-idp', req.method, req.url, err);
  if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: err.message });
});

app = guard(async (req, res) => {
  const path = req.url.split('?')[0];
  if (req.method === 'POST' && path === '/test/session') return testSession(req, res);
  if (req.method === 'POST' && path === '/test/logout') return testLogout(req, res);

  // Mount the provider under the issuer's path (oidc-provider derives its URLs from
  // req.originalUrl minus req.url).
  if (profile.mount) {
    if (path !== profile.mount && !path.startsWith(`${profile.mount}/`)) {
      sendJson(res, 404, { error: 'not_found' });
      return undefined;
    }
    req.originalUrl = req.url;
    const rest = req.url.slice(profile.mount.length);
    req.url = rest.startsWith('/') ? rest : `/${rest}`;
  }

  if (req.method === 'POST' && /^\/interaction\/[^/?]+(\?|$)/.test(req.url)) {
    return submitLogin(req, res, () => handle(req, res));
  }
  return handle(req, res);
});

process.stdout.write(`listening ${issuer}\n`);
