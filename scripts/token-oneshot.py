"""The seed's one-shot path, for comparison with `smart-backend-operator
token`: a fresh Python process discovers the token endpoint with requests,
signs an ES384 assertion with python-jose and exchanges it, as the seed
module's SMARTBackendAuth.get_token does.

Usage: token-oneshot.py FHIR_BASE_URL CLIENT_ID KEY_PEM SCOPE"""
import sys
import time
import uuid

import requests
from jose import jwt


def main():
    base, client_id, key_path, scope = sys.argv[1:5]
    config = requests.get(f"{base}/.well-known/smart-configuration", timeout=15).json()
    endpoint = config["token_endpoint"]
    with open(key_path) as f:
        key = f.read()
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": endpoint, "iat": now,
              "exp": now + 240, "jti": str(uuid.uuid4())}
    assertion = jwt.encode(claims, key, algorithm="ES384", headers={"typ": "JWT", "kid": sys.argv[5]})
    answer = requests.post(endpoint, timeout=15, data={
        "grant_type": "client_credentials", "scope": scope,
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        "client_assertion": assertion,
    })
    answer.raise_for_status()
    assert answer.json()["access_token"]


main()
