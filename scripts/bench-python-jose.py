"""Signing speed of the Python stack the project's seed module used
(python-jose over the `cryptography` package, i.e. OpenSSL), measured the
same way as our criterion benchmark: one SMART client assertion per call,
ES384 and RS384 with a 3072-bit key. The key is constructed once as a
jose key object, as the module holds it (`SmartBackendKeys.private_jwk`).

Run by `make bench` inside a venv under target/ (scripts/bench-python-jose);
prints JSON that scripts/bench-report puts beside the Rust figures."""
import json
import time
import timeit
import uuid

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jose import jwt
from jose.backends.cryptography_backend import CryptographyECKey, CryptographyRSAKey


def pem(private_key):
    return private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def claims():
    now = int(time.time())
    return {
        "iss": "bench-client",
        "sub": "bench-client",
        "aud": "https://ehr.example.org/oauth2/token",
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + 240,
    }


def measure(sign, target_seconds=3.0):
    # Calibrate to about target_seconds per round, then take the best of 5.
    number = 1
    while timeit.timeit(sign, number=number) < 0.2:
        number *= 2
    per_round = max(1, int(number * target_seconds / 0.2 / 5))
    best = min(timeit.repeat(sign, number=per_round, repeat=5)) / per_round
    return best


results = {}
for name, alg, private_key, key_class in [
    ("ES384", "ES384", ec.generate_private_key(ec.SECP384R1()), CryptographyECKey),
    ("RS384-3072", "RS384", rsa.generate_private_key(65537, 3072), CryptographyRSAKey),
]:
    text = pem(private_key)
    key = key_class(text, alg)
    headers = {"kid": "bench-kid", "typ": "JWT"}
    held = measure(lambda: jwt.encode(claims(), key, algorithm=alg, headers=headers))
    from_pem = measure(lambda: jwt.encode(claims(), text, algorithm=alg, headers=headers))
    results[name] = {"key_object_ms": held * 1e3, "pem_each_call_ms": from_pem * 1e3}

import cryptography
import jose

results["versions"] = {
    "python-jose": jose.__version__,
    "cryptography": cryptography.__version__,
    "openssl": __import__("cryptography.hazmat.backends.openssl", fromlist=["backend"]).backend.openssl_version_text(),
}
print(json.dumps(results, indent=2))
