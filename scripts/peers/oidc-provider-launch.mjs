// Peer server for the launch/refresh benchmark: node-oidc-provider configured to do the same
// per-round-trip work as carebroker's SMART App Launch path, with no user interaction:
//   GET  /auth   response_type=code, public client `bench-app`, PKCE S256, nonce; the request
//                carries the session cookie of a signed-in user whose grant already covers the
//                requested scopes, so the answer is a 303 straight to the redirect_uri with `code`.
//   POST /token  grant_type=authorization_code -> access token (JWT, ES256, aud = .../fhir),
//                ID token (RS256, or ES256 with --id-token-alg) and refresh token.
//   POST /token  grant_type=refresh_token -> new tokens; the refresh token rotates on every use
//                and reusing a rotated one fails (and revokes the grant, as oidc-provider does).
//
// The signed-in session comes from a bench-only helper route outside oidc-provider:
//   POST /bench/session  -> 204 with Set-Cookie `_session` and `_session.sig` for account `nurse`,
//                           plus a Grant for `bench-app` covering the launch scopes.
// It stores exactly what a real login + consent interaction would leave behind (a Session with
// accountId/loginTs and the client's grantId, and a Grant with the scopes), so oidc-provider's
// default interaction policy (login and consent checks) runs unchanged on every /auth and finds
// nothing to prompt for. Each call makes a fresh session + grant (e.g. one per load-gen worker).
//
// Usage:
//   NODE_ENV=production node scripts/peers/oidc-provider-launch.mjs --port 9402 [--id-token-alg ES256] [--verbose]
// Prints `listening http://127.0.0.1:PORT` once ready.

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '9402' },
    verbose: { type: 'boolean', default: false }, // print why each rejected request failed
    'id-token-alg': { type: 'string', default: 'RS256' }, // RS256 or ES256, as carebroker's client registers
  },
});

const port = Number(args.port);
const issuer = `http://127.0.0.1:${port}`;
const resource = `${issuer}/fhir`; // the access tokens' aud, like carebroker's FHIR base
const clientId = 'bench-app';
const redirectUri = 'http://127.0.0.1:9/callback'; // never followed; read from Location
const accountId = 'nurse';
const resourceScope = 'patient/*.rs';
const oidcScope = 'openid offline_access';

// Lifetimes as carebroker's [launch]/[sessions] defaults.
const ttl = {
  AuthorizationCode: 60,
  AccessToken: 300,
  IdToken: 300,
  RefreshToken: 90 * 86_400, // offline_grant_lifetime_secs
  Grant: 90 * 86_400,
  Session: 43_200, // absolute session timeout
  Interaction: 900, // unused: no interaction is ever started on this path
};

// Provider signing keys, fresh per run: RS256 for ID tokens, ES256 for JWT access tokens.
const exportJwk = (key, kid, alg) => ({ ...key.export({ format: 'jwk' }), kid, alg, use: 'sig' });
const rsaKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
const ecKey = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey;
const jwks = { keys: [exportJwk(rsaKey, 'bench-rs256', 'RS256'), exportJwk(ecKey, 'bench-es256', 'ES256')] };

// Storage adapter: every model in one Map with expiry (like the client_credentials peer), plus a
// grantId -> keys index so revokeByGrantId (refresh/code reuse) can drop a whole token family.
const store = new Map(); // key -> { payload, expiresAt }
const byGrant = new Map(); // grantId -> Set<key>
const unindex = (key, payload) => {
  const members = payload?.grantId && byGrant.get(payload.grantId);
  if (members && members.delete(key) && members.size === 0) byGrant.delete(payload.grantId);
};
class TtlMapAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const key = this.key(id);
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(key, { payload, expiresAt });
    if (payload.grantId) {
      if (!byGrant.has(payload.grantId)) byGrant.set(payload.grantId, new Set());
      byGrant.get(payload.grantId).add(key);
    }
  }

  async find(id) {
    const key = this.key(id);
    const entry = store.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(key);
      unindex(key, entry.payload);
      return undefined;
    }
    return entry.payload;
  }

  async consume(id) {
    const payload = await this.find(id);
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) {
    const key = this.key(id);
    unindex(key, store.get(key)?.payload);
    store.delete(key);
  }

  // Called once per token model on reuse detection; drops this model's members of the family.
  async revokeByGrantId(grantId) {
    const members = byGrant.get(grantId);
    if (!members) return;
    const prefix = `${this.model}:`;
    for (const key of members) {
      if (!key.startsWith(prefix)) continue;
      store.delete(key);
      members.delete(key);
    }
    if (members.size === 0) byGrant.delete(grantId);
  }

  // Only used by interaction resume / device flow, neither of which this peer serves.
  async findByUid() { return undefined; }

  async findByUserCode() { return undefined; }
}
// Sweep expired entries now and then so memory stays bounded by the live entries.
setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of store) {
    if (entry.expiresAt <= now) {
      store.delete(key);
      unindex(key, entry.payload);
    }
  }
}, 10_000).unref();

const configuration = {
  adapter: TtlMapAdapter,
  clients: [{
    client_id: clientId,
    token_endpoint_auth_method: 'none', // public client: PKCE is then required by default
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: [redirectUri],
    id_token_signed_response_alg: args['id-token-alg'],
  }],
  jwks,
  findAccount: (ctx, id) => ({ accountId: id, claims: () => ({ sub: id }) }),
  scopes: ['openid', 'offline_access'],
  responseTypes: ['code'],
  clientAuthMethods: ['none'],
  enabledJWA: { idTokenSigningAlgValues: ['RS256', 'ES256'] },
  pkce: { required: () => true }, // only S256 is supported by oidc-provider 9
  ttl,
  // oidc-provider silently drops `offline_access` from an authorization request unless it also
  // says prompt=consent (which would force an interaction every time). Issue refresh tokens for
  // this client by policy instead, and do not tie them to the browser session.
  issueRefreshToken: (ctx, client) => client.clientId === clientId,
  expiresWithSession: () => false,
  rotateRefreshToken: true, // rotate on every use; a rotated (consumed) token then fails
  clientBasedCORS: () => false,
  cookies: { keys: [randomBytes(32).toString('base64url')] }, // signs _session (-> _session.sig)
  features: {
    devInteractions: { enabled: false },
    pushedAuthorizationRequests: { enabled: false },
    // JWT access tokens need a resource server: every token is for the FHIR base.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return {
          scope: resourceScope,
          audience: resource,
          accessTokenTTL: ttl.AccessToken,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
};

const provider = new Provider(issuer, configuration);
// Quiet by default; only unexpected failures are printed (not per-request logging).
provider.on('server_error', (ctx, err) => console.error('server_error', err));
if (args.verbose) {
  for (const event of ['grant.error', 'authorization.error']) {
    provider.on(event, (ctx, err) => console.error(event, err.error, err.error_detail ?? err.error_description ?? err.message));
  }
}

// What a finished login + consent interaction would store: a Grant for the client with the
// launch scopes, and a Session signed in as `nurse` pointing at that grant.
async function createSignedInSession(req, res) {
  const grant = new provider.Grant({ accountId, clientId });
  grant.addOIDCScope(oidcScope);
  grant.addResourceScope(resource, resourceScope);
  const grantId = await grant.save();

  const session = new provider.Session();
  session.loginAccount({ accountId });
  session.ensureClientContainer(clientId);
  session.grantIdFor(clientId, grantId);
  await session.save(ttl.Session);

  // Set the cookie through oidc-provider's own (keygrip-signed) cookie jar, with the default
  // cookies.long flags, so it is exactly the cookie a real login would have produced.
  const ctx = provider.createContext(req, res);
  ctx.cookies.set(provider.cookieName('session'), session.id, {
    httpOnly: true,
    sameSite: 'lax',
    expires: new Date(session.exp * 1000),
  });
  res.statusCode = 204;
  res.end();
}

const handle = provider.callback();
createServer((req, res) => {
  if (req.method === 'POST' && req.url === '/bench/session') {
    createSignedInSession(req, res).catch((err) => {
      console.error('bench/session', err);
      res.statusCode = 500;
      res.end();
    });
    return;
  }
  // There is no interaction UI: a request that needs one was set up wrong.
  if (req.url.startsWith('/interaction/')) {
    res.statusCode = 403;
    res.end('bench peer: no interactive login; POST /bench/session first\n');
    return;
  }
  handle(req, res);
}).listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
