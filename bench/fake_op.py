#!/usr/bin/env python3
"""A throw-away OpenID Provider for bench/load.sh (row o: Apache httpd + mod_auth_openidc).

Benchmark use only, on 127.0.0.1: it logs every user in without asking (one fixed subject),
trusts any client that knows the secret given on the command line, and keeps its codes in memory.
Python 3 standard library only; RS256 signatures are made by the openssl CLI (`openssl dgst
-sha256 -sign`, PKCS#1 v1.5 = RS256), so nothing needs to be installed besides openssl.

    fake_op.py --port 18089 --tls-cert tls.crt --tls-key tls.key --signing-key sign.pem \
        --client-id bench --client-secret s3cret

Endpoints: /.well-known/openid-configuration, /authorize (302 straight back to the client with a
code), /token (code -> id_token + access_token), /jwks.json. It serves HTTPS only: mod_auth_openidc
refuses plain-http provider endpoints. No userinfo endpoint (the id_token carries the claims).
"""

import argparse
import base64
import http.server
import json
import secrets
import ssl
import subprocess
import sys
import threading
import time
import urllib.parse

SUBJECT = "bench-user-0001"
KID = "bench-rs256"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def int_b64url(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8, "big"))


class Provider:
    def __init__(self, args):
        self.issuer = f"https://127.0.0.1:{args.port}"
        self.client_id = args.client_id
        self.client_secret = args.client_secret
        self.signing_key = args.signing_key
        self.codes = {}  # code -> (nonce, redirect_uri, issued at)
        self.lock = threading.Lock()
        out = subprocess.run(
            ["openssl", "rsa", "-in", self.signing_key, "-noout", "-modulus"],
            check=True, capture_output=True, timeout=10, text=True,
        ).stdout.strip()
        if not out.startswith("Modulus="):
            raise SystemExit(f"unexpected openssl output: {out!r}")
        self.jwks = {"keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": KID,
            "n": int_b64url(int(out[len("Modulus="):], 16)), "e": int_b64url(65537),
        }]}
        self.metadata = {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "jwks_uri": f"{self.issuer}/jwks.json",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "profile"],
            "claims_supported": ["sub", "name", "preferred_username"],
            "code_challenge_methods_supported": ["S256", "plain"],
        }

    def sign_rs256(self, claims: dict) -> str:
        header = {"alg": "RS256", "typ": "JWT", "kid": KID}
        signing_input = (b64url(json.dumps(header).encode()) + "."
                         + b64url(json.dumps(claims).encode())).encode("ascii")
        signature = subprocess.run(
            ["openssl", "dgst", "-sha256", "-sign", self.signing_key],
            input=signing_input, check=True, capture_output=True, timeout=10,
        ).stdout
        return signing_input.decode("ascii") + "." + b64url(signature)


class Handler(http.server.BaseHTTPRequestHandler):
    provider: Provider = None  # set in main()
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # one line per request on stderr, for KEEP=1 debugging
        sys.stderr.write("fake_op: " + (fmt % args) + "\n")

    def send_json(self, status: int, body: dict):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        p = self.provider
        if url.path == "/.well-known/openid-configuration":
            return self.send_json(200, p.metadata)
        if url.path == "/jwks.json":
            return self.send_json(200, p.jwks)
        if url.path == "/authorize":
            if query.get("client_id") != p.client_id or query.get("response_type") != "code":
                return self.send_json(400, {"error": "invalid_request"})
            redirect_uri = query.get("redirect_uri", "")
            if not redirect_uri.startswith("http://127.0.0.1:"):
                return self.send_json(400, {"error": "invalid_request", "detail": "redirect_uri"})
            code = secrets.token_urlsafe(24)
            with p.lock:
                p.codes[code] = (query.get("nonce"), redirect_uri, time.time())
            params = {"code": code}
            if "state" in query:
                params["state"] = query["state"]
            self.send_response(302)
            self.send_header("Location", redirect_uri + "?" + urllib.parse.urlencode(params))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return self.send_json(404, {"error": "not_found"})

    def client_authenticated(self, form: dict) -> bool:
        p = self.provider
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                return False
            user, password = urllib.parse.unquote(user), urllib.parse.unquote(password)
            return user == p.client_id and password == p.client_secret
        return form.get("client_id") == p.client_id and form.get("client_secret") == p.client_secret

    def do_POST(self):
        p = self.provider
        if urllib.parse.urlsplit(self.path).path != "/token":
            return self.send_json(404, {"error": "not_found"})
        length = int(self.headers.get("Content-Length") or 0)
        if length > 65536:
            return self.send_json(413, {"error": "too_large"})
        form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
        if not self.client_authenticated(form):
            return self.send_json(401, {"error": "invalid_client"})
        with p.lock:
            entry = p.codes.pop(form.get("code", ""), None)
        if form.get("grant_type") != "authorization_code" or entry is None:
            return self.send_json(400, {"error": "invalid_grant"})
        nonce, redirect_uri, issued = entry
        if form.get("redirect_uri") != redirect_uri or time.time() - issued > 60:
            return self.send_json(400, {"error": "invalid_grant"})
        now = int(time.time())
        claims = {
            "iss": p.issuer, "sub": SUBJECT, "aud": p.client_id, "iat": now, "exp": now + 86400,
            "auth_time": now, "name": "Bench User", "preferred_username": "bench",
        }
        if nonce:
            claims["nonce"] = nonce
        return self.send_json(200, {
            "access_token": secrets.token_urlsafe(32), "token_type": "Bearer",
            "expires_in": 86400, "id_token": p.sign_rs256(claims),
        })


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--tls-cert", required=True)
    ap.add_argument("--tls-key", required=True)
    ap.add_argument("--signing-key", required=True)
    ap.add_argument("--client-id", required=True)
    ap.add_argument("--client-secret", required=True)
    args = ap.parse_args()
    Handler.provider = Provider(args)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.tls_cert, args.tls_key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    server.daemon_threads = True
    sys.stderr.write(f"fake_op: listening on {Handler.provider.issuer}\n")
    server.serve_forever()


if __name__ == "__main__":
    main()
