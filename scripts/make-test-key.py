#!/usr/bin/env python3
"""Makes a TEST-ONLY client key pair: PKCS#8 PEM private key and a public JWK Set whose kid is the
RFC 7638 thumbprint. Usage: make-test-key.py NAME ALG (ES256|ES384|RS384) OUTDIR"""
import base64, hashlib, json, sys
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

name, alg, out = sys.argv[1], sys.argv[2], sys.argv[3]
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
def int_bytes(n, size=None):
    size = size or (n.bit_length() + 7) // 8
    return n.to_bytes(size, "big")
if alg.startswith("ES"):
    curve, size, crv = (ec.SECP256R1(), 32, "P-256") if alg == "ES256" else (ec.SECP384R1(), 48, "P-384")
    key = ec.generate_private_key(curve)
    nums = key.public_key().public_numbers()
    members = {"crv": crv, "kty": "EC", "x": b64(int_bytes(nums.x, size)), "y": b64(int_bytes(nums.y, size))}
else:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    nums = key.public_key().public_numbers()
    members = {"e": b64(int_bytes(nums.e)), "kty": "RSA", "n": b64(int_bytes(nums.n))}
kid = b64(hashlib.sha256(json.dumps(members, sort_keys=True, separators=(",", ":")).encode()).digest())
jwk = dict(members, kid=kid, alg=alg, use="sig")
pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
open(f"{out}/{name}.key.pem", "wb").write(pem)
json.dump({"keys": [jwk]}, open(f"{out}/{name}.jwks.json", "w"), indent=2)
print(kid)
