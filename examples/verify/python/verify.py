"""Verifies the identity JWT that wechat-oauth-proxy puts in the ``X-WeChat-Jwt`` header.

用 PyJWT 校验 wechat-oauth-proxy 放在 X-WeChat-Jwt 里的身份 JWT。

Needs PyJWT with its EdDSA support: ``pip install "PyJWT[crypto]"`` (PyJWT + cryptography).

In an application (Flask shown; any framework reads the header the same way)::

    from verify import jwks_from, verify_wechat_jwt
    KEYS = jwks_from("http://127.0.0.1:8080/_wxauth/jwks.json")  # once, at start-up

    @app.before_request
    def wechat_user():
        try:
            g.wechat = verify_wechat_jwt(
                request.headers.get("X-WeChat-Jwt", ""), KEYS,
                issuer="wechat-oauth-proxy",  # [jwt] issuer
                audience="upstream",          # [jwt] audience: your app's name
            )
        except jwt.PyJWTError:
            abort(401)

From the command line (token on stdin; prints the identity as JSON, or ``rejected: <reason>``
on stderr and exit code 1; 2 for wrong usage)::

    python3 verify.py <jwks-url-or-file> <expected-iss> <expected-aud> < token.txt

What is checked: the algorithm is pinned to EdDSA (Ed25519, the proxy's default
``[jwt] algorithm``; ``none``, HS256 and every other ``alg`` are refused), the key is chosen by
the token's ``kid`` from the JWKS (current and, during a rotation, previous key; a remote JWKS
is cached and fetched again when an unknown ``kid`` shows up), the signature, ``iss`` and
``aud`` exactly, ``exp`` (required), ``nbf`` and ``iat`` when present (60 s leeway), and
``sub`` = openid.
"""

import json
import sys

import jwt

#: The one algorithm accepted.
ALGORITHMS = ["EdDSA"]
#: Clock leeway for exp, nbf and iat, in seconds.
LEEWAY_SECONDS = 60


class FileKeys:
    """A JWKS read once from a file, with the same lookup as ``jwt.PyJWKClient``."""

    def __init__(self, path):
        with open(path, encoding="utf-8") as f:
            self._keys = jwt.PyJWKSet.from_json(f.read())

    def get_signing_key_from_jwt(self, token):
        kid = jwt.get_unverified_header(token).get("kid")
        try:
            return self._keys[kid]
        except KeyError:
            raise jwt.PyJWKClientError(f"no key with kid {kid!r} in the JWKS") from None


def jwks_from(source):
    """Keys from an http(s) URL (cached, re-fetched on an unknown kid) or from a file."""
    if source.lower().startswith(("http://", "https://")):
        return jwt.PyJWKClient(source, cache_keys=True, lifespan=300, timeout=5)
    return FileKeys(source)


def verify_wechat_jwt(token, keys, *, issuer, audience):
    """Verifies ``token``; returns the identity dict (``unionid`` is None when WeChat gave none).

    Raises ``jwt.PyJWTError`` (or ``ValueError``) on any problem.
    """
    if not isinstance(jwt.get_unverified_header(token).get("kid"), str):
        raise jwt.InvalidTokenError("the token has no kid")
    key = keys.get_signing_key_from_jwt(token)
    claims = jwt.decode(
        token,
        key,
        algorithms=ALGORITHMS,
        issuer=issuer,
        audience=audience,
        leeway=LEEWAY_SECONDS,
        options={"require": ["exp", "iss", "aud", "sub"]},
    )
    if "openid" in claims and claims["openid"] != claims["sub"]:
        raise jwt.InvalidTokenError("openid and sub differ")

    def text(name):
        value = claims.get(name)
        if value is not None and not isinstance(value, str):
            raise jwt.InvalidTokenError(f"{name} is not a string")
        return value

    return {
        "openid": claims["sub"],
        "unionid": text("unionid"),
        "nickname": text("nickname") or "",
        "avatar": text("avatar") or "",
        "appid": text("appid") or "",
    }


def main(argv):
    if len(argv) != 3:
        print("usage: python3 verify.py <jwks-url-or-file> <expected-iss> <expected-aud> < token",
              file=sys.stderr)
        return 2
    source, issuer, audience = argv
    try:
        token = sys.stdin.read().strip()
        identity = verify_wechat_jwt(token, jwks_from(source), issuer=issuer, audience=audience)
    except (jwt.PyJWTError, OSError, ValueError) as err:
        print(f"rejected: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(identity, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
