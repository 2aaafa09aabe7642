// Writes N pre-signed client_credentials token request bodies, one per line, for
// scripts/bench/replay.lua. Each carries its own RFC 7523 client assertion (ES384, unique jti).
//
// Usage:
//   node scripts/peers/make-assertions.mjs --key certs/test/backend-demo.key.pem \
//     --kid tuPf02p6GZjLto1j-6CFlM76Rleh6DlH_EehtEJ_KMU --client-id backend-demo \
//     --aud http://127.0.0.1:9401/token --scope "system/CarePlan.rs" --count 20000 --out bodies.txt \
//     [--jobs THREADS] [--lifetime SECONDS] [--dpop-htu URL]
//
// With --dpop-htu each line also carries a DPoP proof (RFC 9449, ES256, one fresh key per run,
// unique jti, htm POST, htu URL) after a tab: replay.lua sends it as the DPoP header.
//
// Speed is bounded by P-384 signing: about 1.2k bodies/s per thread with Node 20's OpenSSL 3.0.
//
// The assertions expire 290 s after generation (under carebroker's 300 s limit): generate
// them right before the run that uses them.

import { createPrivateKey, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parseArgs } from 'node:util';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';

const b64url = (value) => Buffer.from(value).toString('base64url');

// Signs `count` assertions and returns them as body lines. ES384 signing is the whole cost
// (OpenSSL 3.0's P-384 does ~1.2k signatures/s per core), hence the worker threads below.
function makeBodies({ keyPem, kid, clientId, aud, scope, iat, exp, count, dpop }) {
  const key = createPrivateKey(keyPem);
  const dpopKey = dpop ? createPrivateKey({ key: dpop.jwk, format: 'jwk' }) : undefined;
  const dpopHeader = dpop
    ? b64url(JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: 'EC', crv: 'P-256', x: dpop.jwk.x, y: dpop.jwk.y } }))
    : undefined;
  // Everything but the assertion is the same on every line.
  const prefix = new URLSearchParams({
    grant_type: 'client_credentials',
    scope,
    client_assertion_type: 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer',
  }).toString() + '&client_assertion=';
  // ES256 for a P-256 key, ES384 for P-384.
  const curve = key.asymmetricKeyDetails?.namedCurve;
  const [alg, hash] = curve === 'prime256v1' ? ['ES256', 'sha256'] : ['ES384', 'sha384'];
  const header = b64url(JSON.stringify({ alg, kid, typ: 'JWT' }));
  const lines = [];
  for (let i = 0; i < count; i += 1) {
    const claims = {
      iss: clientId,
      sub: clientId,
      aud,
      iat,
      exp,
      jti: randomBytes(16).toString('base64url'),
    };
    const signingInput = `${header}.${b64url(JSON.stringify(claims))}`;
    // JWS wants the raw r||s signature, not DER.
    const signature = sign(hash, Buffer.from(signingInput), { key, dsaEncoding: 'ieee-p1363' });
    // A JWT is made of base64url characters and dots only: safe in a form body as it is.
    let proof = '';
    if (dpop) {
      const input = `${dpopHeader}.${b64url(JSON.stringify({ jti: randomBytes(12).toString('base64url'), htm: 'POST', htu: dpop.htu, iat }))}`;
      proof = `\t${input}.${sign('sha256', Buffer.from(input), { key: dpopKey, dsaEncoding: 'ieee-p1363' }).toString('base64url')}`;
    }
    lines.push(`${prefix}${signingInput}.${signature.toString('base64url')}${proof}\n`);
  }
  return lines.join('');
}

if (!isMainThread) {
  parentPort.postMessage(makeBodies(workerData));
} else {
  const { values: args } = parseArgs({
    options: {
      key: { type: 'string' },
      kid: { type: 'string' },
      'client-id': { type: 'string', default: 'backend-demo' },
      aud: { type: 'string' },
      scope: { type: 'string', default: 'system/CarePlan.rs' },
      count: { type: 'string', default: '1000' },
      out: { type: 'string' },
      lifetime: { type: 'string', default: '290' }, // seconds from now to exp
      jobs: { type: 'string', default: String(availableParallelism()) }, // worker threads
      'dpop-htu': { type: 'string' }, // add a DPoP proof for this token endpoint URL
    },
  });
  for (const required of ['key', 'kid', 'aud', 'out']) {
    if (!args[required]) {
      console.error(`missing --${required}`);
      process.exit(2);
    }
  }

  const keyPem = readFileSync(args.key, 'utf8');
  if (!['secp384r1', 'prime256v1'].includes(createPrivateKey(keyPem).asymmetricKeyDetails?.namedCurve)) {
    console.error('--key must be a P-256 (ES256) or P-384 (ES384) private key');
    process.exit(2);
  }
  const count = Number(args.count);
  const jobs = Math.max(1, Math.min(Number(args.jobs), count));
  const iat = Math.floor(Date.now() / 1000);
  const exp = iat + Number(args.lifetime);
  const dpop = args['dpop-htu']
    ? { htu: args['dpop-htu'], jwk: generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }) }
    : undefined;
  const common = {
    keyPem, kid: args.kid, clientId: args['client-id'], aud: args.aud, scope: args.scope, iat, exp, dpop,
  };

  const started = Date.now();
  // Split the count over the workers; each returns its share as one string.
  const shares = Array.from({ length: jobs }, (_, j) => Math.floor(count / jobs) + (j < count % jobs ? 1 : 0));
  const parts = await Promise.all(shares.map((share) => new Promise((resolve, reject) => {
    const worker = new Worker(new URL(import.meta.url), { workerData: { ...common, count: share } });
    worker.once('message', resolve);
    worker.once('error', reject);
  })));
  writeFileSync(args.out, parts.join(''));
  console.error(`wrote ${count} bodies to ${args.out} in ${Date.now() - started} ms with ${jobs} threads (exp ${exp})`);
}
