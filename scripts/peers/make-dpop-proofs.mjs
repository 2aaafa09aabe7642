// Writes DPoP proofs (RFC 9449) for benchmarks, one per line as "<tab><proof>" (an empty body
// then the proof, the line format scripts/bench/replay.lua reads), each with its own jti.
//
//   node scripts/peers/make-dpop-proofs.mjs --key KEY.json --htm GET --htu URL [--token T]
//     --count N --out FILE
//
// --key names a file holding a P-256 private JWK; it is created on first use, so the token
// request's proof and the reads' proofs share one key. --token adds `ath` (the token's hash).

import { createHash, createPrivateKey, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

const { values: args } = parseArgs({
  options: {
    key: { type: 'string' },
    htm: { type: 'string', default: 'GET' },
    htu: { type: 'string' },
    token: { type: 'string' },
    count: { type: 'string', default: '1' },
    out: { type: 'string' },
  },
});
for (const required of ['key', 'htu', 'out']) {
  if (!args[required]) {
    console.error(`missing --${required}`);
    process.exit(2);
  }
}
if (!existsSync(args.key)) {
  const jwk = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
  writeFileSync(args.key, JSON.stringify(jwk));
}
const jwk = JSON.parse(readFileSync(args.key, 'utf8'));
const key = createPrivateKey({ key: jwk, format: 'jwk' });
const b64url = (value) => Buffer.from(value).toString('base64url');
const header = b64url(JSON.stringify({ typ: 'dpop+jwt', alg: 'ES256', jwk: { kty: 'EC', crv: 'P-256', x: jwk.x, y: jwk.y } }));
const ath = args.token ? createHash('sha256').update(args.token).digest('base64url') : undefined;
const iat = Math.floor(Date.now() / 1000);
const lines = [];
for (let i = 0; i < Number(args.count); i += 1) {
  const claims = { jti: randomBytes(12).toString('base64url'), htm: args.htm, htu: args.htu, iat, ...(ath ? { ath } : {}) };
  const input = `${header}.${b64url(JSON.stringify(claims))}`;
  lines.push(`\t${input}.${sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' }).toString('base64url')}\n`);
}
writeFileSync(args.out, lines.join(''));
