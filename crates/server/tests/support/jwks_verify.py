"""Verify a Latchkey JWT the way a resource server would: with PyJWT, fed only the JWKS URL.

usage: jwks_verify.py JWKS_URL TOKEN ISSUER AUDIENCE
Prints the verified claims as JSON; exits non-zero if verification fails.
"""
import json
import sys

import jwt

jwks_url, token, issuer, audience = sys.argv[1:5]
signing_key = jwt.PyJWKClient(jwks_url).get_signing_key_from_jwt(token)
claims = jwt.decode(
    token,
    signing_key.key,
    algorithms=["EdDSA", "ES256", "RS256"],
    audience=audience,
    issuer=issuer,
    options={"require": ["exp", "iat", "iss", "sub", "aud"]},
)
print(json.dumps(claims))
