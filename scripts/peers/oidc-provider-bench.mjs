// Peer server for the token-issuance benchmark: node-oidc-provider configured to do the same
// work per request as carebroker's SMART Backend Services path:
//   POST /token  grant_type=client_credentials, client authenticated with private_key_jwt
//   (ES384 client assertion, jti replay-checked), answer = JWT access token signed ES256.
//
// Usage:
//   NODE_ENV=production node scripts/peers/oidc-provider-bench.mjs \
//     --port 9401 --jwks certs/test/backend-demo.jwks.json [--client-id backend-demo] \
//     [--adapter ttl|lru] [--verbose]
//
// Prints `listening http://127.0.0.1:PORT` once ready. Client assertions must carry
// aud = http://127.0.0.1:PORT/token (the issuer URL is accepted too).

import { generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '9401' },
    'client-id': { type: 'string', default: 'backend-demo' },
    jwks: { type: 'string' },
    // ttl: a plain Map with expiry (like carebroker's embedded store); lru: oidc-provider's
    // built-in memory adapter, which only remembers about the last 1000 entries.
    adapter: { type: 'string', default: 'ttl' },
    verbose: { type: 'boolean', default: false }, // print why each rejected request failed
    dpop: { type: 'boolean', default: false }, // accept DPoP proofs (RFC 9449): sender-constrained tokens
  },
});
if (!args.jwks) {
  console.error('usage: oidc-provider-bench.mjs --port P --jwks FILE [--client-id ID] [--adapter ttl|lru]');
  process.exit(2);
}

const port = Number(args.port);
const issuer = `http://127.0.0.1:${port}`;
const resource = `${issuer}/fhir`; // the access tokens' aud, like carebroker's FHIR base
const scopes = ['system/CarePlan.rs', 'system/Patient.rs'];
const clientJwks = JSON.parse(readFileSync(args.jwks, 'utf8'));
// The client's assertion algorithm: the alg of its (first) key, ES256 or ES384.
const clientAlg = clientJwks.keys[0].alg ?? (clientJwks.keys[0].crv === 'P-256' ? 'ES256' : 'ES384');

// The provider's own signing key: a fresh ES256 key per run.
const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-es256', alg: 'ES256', use: 'sig' };

// Storage adapter: every model in one Map, entries dropped once expired. oidc-provider only
// stores ReplayDetection entries here on this path (JWT access tokens are not persisted), so
// this is the jti replay cache. Unlike the built-in LRU it never forgets a live jti.
const store = new Map();
class TtlMapAdapter {
  constructor(model) { this.model = model; }

  key(id) { return `${this.model}:${id}`; }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity;
    store.set(this.key(id), { payload, expiresAt });
  }

  async find(id) {
    const entry = store.get(this.key(id));
    if (!entry) return undefined;
    if (entry.expiresAt <= Date.now()) {
      store.delete(this.key(id));
      return undefined;
    }
    return entry.payload;
  }

  async consume(id) {
    const payload = await this.find(id);
    if (payload) payload.consumed = Math.floor(Date.now() / 1000);
  }

  async destroy(id) { store.delete(this.key(id)); }

  // Not reached by the client_credentials path; present to complete the adapter interface.
  async findByUid() { return undefined; }

  async findByUserCode() { return undefined; }

  async revokeByGrantId() {}
}
// Sweep expired entries now and then so memory stays bounded by the live jtis.
setInterval(() => {
  const now = Date.now();
  for (const [key, entry] of store) if (entry.expiresAt <= now) store.delete(key);
}, 10_000).unref();

const configuration = {
  ...(args.adapter === 'ttl' ? { adapter: TtlMapAdapter } : {}),
  clients: [{
    client_id: args['client-id'],
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: clientAlg,
    jwks: clientJwks,
    grant_types: ['client_credentials'],
    response_types: [],
    redirect_uris: [],
    scope: scopes.join(' '),
  }],
  jwks: { keys: [signingJwk] },
  scopes, // static scopes: the client's `scope` then acts as an allow list for them
  clientAuthMethods: ['private_key_jwt'],
  // ES384 is not in oidc-provider's default list of client assertion algorithms.
  enabledJWA: {
    clientAuthSigningAlgValues: [clientAlg],
    idTokenSigningAlgValues: ['ES256'],
  },
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  clockTolerance: 30, // as carebroker's clock_skew_secs
  ttl: { ClientCredentials: 300 }, // as carebroker's backend_access_token_lifetime_secs
  clientBasedCORS: () => false, // no browser clients; also silences a startup notice
  cookies: { keys: [randomBytes(32).toString('base64url')] }, // unused on /token
  features: {
    devInteractions: { enabled: false },
    pushedAuthorizationRequests: { enabled: false },
    clientCredentials: { enabled: true },
    dPoP: { enabled: args.dpop },
    // Needed for JWT access tokens: every client_credentials token is bound to one resource.
    resourceIndicators: {
      enabled: true,
      defaultResource: () => resource,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, indicator) => {
        if (indicator !== resource) throw new errors.InvalidTarget();
        return {
          scope: scopes.join(' '),
          audience: resource,
          accessTokenTTL: 300,
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
  provider.on('grant.error', (ctx, err) => console.error('grant.error', err.error, err.error_detail ?? err.message));
}

createServer(provider.callback()).listen(port, '127.0.0.1', () => {
  console.log(`listening ${issuer}`);
});
