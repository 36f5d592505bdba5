"""Token endpoints of the throw-away internet, issuing short-lived credentials, and APIs that
accept them only while they are valid:

    /oauth/token     an OAuth2 authorization server built with Authlib: client credentials,
                     and refresh tokens that rotate (each use revokes the one used)
    /oauth/api       accepts a valid access token (Authlib's ResourceProtector)
    /oauth/issue     test control: a refresh token for a client (what a user's consent gives)
    /oauth/revoke    test control: revoke every refresh token of a client
    /github/app/installations/ID/access_tokens
                     GitHub-shaped: the app's JWT verified with the app's public key
                     (PyJWT), an installation token narrowed to repositories/permissions
    /github/repos/OWNER/REPO   accepts a valid installation token for that repository
    /google/token    Google-shaped: a service account's signed assertion verified with its
                     public key; an access token for scopes, or an ID token for an audience
    /google/api, /google/id-api   accept a valid access token, a valid ID token

Every API answer echoes the Authorization header it got (so scrubbing is exercised); every
token issued or presented is logged, so tests can tell which value went where. Served over
TLS in the inet namespace (`serve`); `make_app` is also used in-process by unit tests.
"""

from __future__ import annotations

import base64
import json
import secrets
import socketserver
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

import jwt
from authlib.integrations.flask_oauth2 import AuthorizationServer, ResourceProtector
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc6750 import BearerTokenValidator
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

type Write = Callable[..., None]

GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # noqa: S105 - a URL


class Client(ClientMixin):  # type: ignore[misc]
    def __init__(self, client_id: str, secret: str, scope: str) -> None:
        self.client_id, self.secret, self.scope = client_id, secret, scope

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return ""

    def get_allowed_scope(self, scope: str) -> str:
        allowed = set(self.scope.split())
        return " ".join(s for s in (scope or self.scope).split() if s in allowed)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return secrets.compare_digest(client_secret, self.secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in ("client_credentials", "refresh_token")


class Token(TokenMixin):  # type: ignore[misc]
    def __init__(self, client_id: str, scope: str, expires_in: int) -> None:
        self.client_id, self.scope, self.expires_in = client_id, scope, expires_in
        self.issued = time.time()
        self.revoked = False

    def check_client(self, client: Client) -> bool:
        return client.client_id == self.client_id

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return self.expires_in

    def is_expired(self) -> bool:
        return time.time() > self.issued + self.expires_in

    def is_revoked(self) -> bool:
        return self.revoked


class Store:
    """Clients, access tokens and refresh tokens, in memory."""

    def __init__(self, clients: list[dict[str, str]]) -> None:
        self.clients = {c["client_id"]: Client(c["client_id"], c["client_secret"], c["scope"])
                        for c in clients}
        self.access: dict[str, Token] = {}
        self.refresh: dict[str, Token] = {}
        self.lock = threading.Lock()


def _oauth2(app: Flask, store: Store, lifetime: int, write: Write) -> None:
    class RefreshGrant(grants.RefreshTokenGrant):  # type: ignore[misc]
        INCLUDE_NEW_REFRESH_TOKEN = True            # rotation
        TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")

        def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
            token = store.refresh.get(refresh_token)
            return token if token is not None and not token.revoked else None

        def authenticate_user(self, refresh_token: Token) -> object:
            return refresh_token.client_id

        def revoke_old_credential(self, refresh_token: Token) -> None:
            refresh_token.revoked = True

    class CredentialsGrant(grants.ClientCredentialsGrant):  # type: ignore[misc]
        TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post")

    def save_token(token: dict[str, Any], req: Any) -> None:
        client_id = req.client.client_id
        with store.lock:
            store.access[token["access_token"]] = Token(client_id, token.get("scope", ""),
                                                        token["expires_in"])
            if "refresh_token" in token:
                store.refresh[token["refresh_token"]] = Token(client_id, token.get("scope", ""),
                                                              86400)
        write("token-issued", api="oauth", grant=req.payload.grant_type, client=client_id,
              token=token["access_token"], refresh_token=token.get("refresh_token"),
              lifetime=token["expires_in"])

    app.config["OAUTH2_TOKEN_EXPIRES_IN"] = {"client_credentials": lifetime,
                                             "refresh_token": lifetime}
    app.config["OAUTH2_REFRESH_TOKEN_GENERATOR"] = True
    server = AuthorizationServer(app, query_client=store.clients.get, save_token=save_token)
    server.register_grant(CredentialsGrant)
    server.register_grant(RefreshGrant)

    class Validator(BearerTokenValidator):  # type: ignore[misc]
        def authenticate_token(self, token_string: str) -> Token | None:
            return store.access.get(token_string)

    protect = ResourceProtector()
    protect.register_token_validator(Validator())

    @app.post("/oauth/token", endpoint="oauth_token")
    def token() -> Any:
        return server.create_token_response()

    @app.get("/oauth/api", endpoint="oauth_api")
    def api() -> Any:
        try:
            protect.acquire_token()
        except HTTPException:
            return _answer(write, "oauth", False)
        return _answer(write, "oauth", True)

    @app.post("/oauth/issue")
    def issue() -> Any:
        client = store.clients[request.form["client_id"]]
        refresh = "rt_" + secrets.token_urlsafe(24)
        store.refresh[refresh] = Token(client.client_id, client.scope, 86400)
        write("token-issued", api="oauth", grant="consent", client=client.client_id,
              refresh_token=refresh)
        return jsonify(refresh_token=refresh)

    @app.post("/oauth/revoke")
    def revoke() -> Any:
        with store.lock:
            for token in store.refresh.values():
                if token.client_id == request.form["client_id"]:
                    token.revoked = True
        write("tokens-revoked", api="oauth", client=request.form["client_id"])
        return jsonify(revoked=True)


def _bearer() -> str:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "basic":      # git's way: x-access-token:TOKEN
        value = base64.b64decode(value).decode().partition(":")[2]
    return value.strip() if scheme.lower() in ("bearer", "token", "basic") else ""


def _answer(write: Write, api: str, valid: bool, **extra: Any) -> Any:
    write("token-used", api=api, path=request.path, token=_bearer(), valid=valid)
    body = jsonify(api=api, valid=valid, authorization=request.headers.get("authorization"),
                   **extra)
    return body, 200 if valid else 401


def _github(app: Flask, spec: dict[str, Any], lifetime: int, write: Write) -> None:
    issued: dict[str, tuple[float, list[str], dict[str, str]]] = {}

    @app.post("/github/app/installations/<int:installation>/access_tokens")
    def access_tokens(installation: int) -> Any:
        scheme, _, assertion = request.headers.get("authorization", "").partition(" ")
        try:
            claims = jwt.decode(assertion, spec["public_key"], algorithms=["RS256"],
                                issuer=spec["app_id"], options={"require": ["iat", "exp"]})
        except jwt.PyJWTError as e:
            write("app-jwt-refused", api="github", error=str(e))
            return jsonify(message="A JSON web token could not be decoded"), 401
        if scheme.lower() != "bearer" or claims["exp"] - claims["iat"] > 660:
            return jsonify(message="'Expiration time' claim ('exp') is too far in the future"), 401
        if str(installation) != spec["installation_id"]:
            return jsonify(message="Not Found"), 404
        body = request.get_json(silent=True) or {}
        token, expires = "ghs_" + secrets.token_urlsafe(27), int(time.time()) + lifetime
        issued[token] = (expires, body.get("repositories", []), body.get("permissions", {}))
        write("token-issued", api="github", token=token, repositories=body.get("repositories"),
              permissions=body.get("permissions"), lifetime=lifetime)
        return jsonify(token=token, permissions=body.get("permissions", {"contents": "read"}),
                       expires_at=datetime.fromtimestamp(expires, UTC).strftime(
                           "%Y-%m-%dT%H:%M:%SZ")), 201

    @app.get("/github/repos/<owner>/<repo>")
    def repository(owner: str, repo: str) -> Any:
        known = issued.get(_bearer())
        valid = known is not None and time.time() < known[0] and \
            (not known[1] or repo in known[1])
        return _answer(write, "github", valid, repository=f"{owner}/{repo}")


def _google(app: Flask, spec: dict[str, Any], lifetime: int, write: Write) -> None:
    signer = serialization.load_pem_private_key(spec["signer"].encode(), password=None)
    assert isinstance(signer, rsa.RSAPrivateKey)
    access: dict[str, float] = {}

    @app.post("/google/token", endpoint="google_token")
    def token() -> Any:
        try:
            claims = jwt.decode(request.form["assertion"], spec["public_key"],
                                algorithms=["RS256"], issuer=spec["client_email"],
                                # as Google: its token endpoint's name, wherever token_uri is
                                audience=[spec["token_uri"], GOOGLE_TOKEN_AUDIENCE])
        except (jwt.PyJWTError, KeyError) as e:
            write("assertion-refused", api="google", error=str(e))
            return jsonify(error="invalid_grant", error_description="Invalid JWT Signature."), 400
        now = int(time.time())
        if "target_audience" in claims:
            value = jwt.encode({"iss": "https://accounts.google.test", "sub": claims["iss"],
                                "email": claims["iss"], "aud": claims["target_audience"],
                                "iat": now, "exp": now + lifetime}, signer, algorithm="RS256")
            write("token-issued", api="google", token=value, id_token=True, lifetime=lifetime,
                  audience=claims["target_audience"])
            return jsonify(id_token=value)
        value = "ya29." + secrets.token_urlsafe(30)
        access[value] = now + lifetime
        write("token-issued", api="google", token=value, id_token=False, lifetime=lifetime,
              scope=claims.get("scope"))
        return jsonify(access_token=value, expires_in=lifetime, token_type="Bearer")  # noqa: S106

    @app.get("/google/api", endpoint="google_api")
    def api() -> Any:
        return _answer(write, "google", time.time() < access.get(_bearer(), 0))

    @app.get("/google/id-api")
    def id_api() -> Any:
        try:
            claims = jwt.decode(_bearer(), signer.public_key(), algorithms=["RS256"],
                                audience=spec["audience"])
        except jwt.PyJWTError:
            return _answer(write, "google-id", False)
        return _answer(write, "google-id", True, email=claims["email"])


def make_app(spec: dict[str, Any], write: Write) -> Flask:
    """`spec`: as `Material.spec` makes it."""
    app = Flask("sandgate-test-tokens")
    _oauth2(app, Store(spec["clients"]), spec["lifetime"], write)
    _github(app, spec["github"], spec["lifetime"], write)
    _google(app, spec["google"], spec["lifetime"], write)
    return app


@dataclass(frozen=True)
class Material:
    """What the gateway is given (files, ids, client secrets) and what the servers verify
    with (public keys), made fresh for each topology."""

    directory: Path
    cc_client: str
    cc_secret: str
    rt_client: str
    rt_secret: str
    github_app_id: str
    github_installation: str
    github_key: Path               # the app's private key (PEM)
    google_account: Path           # the service account's JSON key
    google_email: str
    google_audience: str
    lifetime: int

    def spec(self) -> dict[str, Any]:
        github_public = _public_pem(self.github_key.read_text())
        account = json.loads(self.google_account.read_text())
        return {"lifetime": self.lifetime,
                "clients": [{"client_id": self.cc_client, "client_secret": self.cc_secret,
                             "scope": "read write"},
                            {"client_id": self.rt_client, "client_secret": self.rt_secret,
                             "scope": "read"}],
                "github": {"app_id": self.github_app_id,
                           "installation_id": self.github_installation,
                           "public_key": github_public},
                "google": {"client_email": self.google_email,
                           "public_key": _public_pem(account["private_key"]),
                           "token_uri": account["token_uri"],
                           "audience": self.google_audience,
                           "signer": (self.directory / "google-signer.pem").read_text()}}

    def secret_values(self) -> list[str]:
        """What must never leave the gateway (the private keys as written)."""
        account = json.loads(self.google_account.read_text())
        return [self.cc_secret, self.rt_secret, self.github_key.read_text().strip(),
                account["private_key"].strip()]


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _public_pem(private: str) -> str:
    key = serialization.load_pem_private_key(private.encode(), password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def make_material(directory: Path, google_host: str, lifetime: int) -> Material:
    directory.mkdir(parents=True, exist_ok=True)
    github_key = directory / "github-app.pem"
    github_key.write_text(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    email = "agent@sandgate-test.iam.gserviceaccount.com"
    account = directory / "google-service-account.json"
    account.write_text(json.dumps({
        "type": "service_account", "project_id": "sandgate-test", "private_key_id": "k1",
        "private_key": _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        "client_email": email, "client_id": "1",
        "token_uri": f"https://{google_host}/google/token"}))
    signer = directory / "google-signer.pem"     # the ID tokens' issuer
    signer.write_text(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    for path in (github_key, account, signer):
        path.chmod(0o600)
    return Material(directory, "sandgate-cc", "cs-" + secrets.token_urlsafe(18), "sandgate-rt",
                    "rs-" + secrets.token_urlsafe(18), "31337", "4242", github_key, account,
                    email, f"https://{google_host}/google/id-api", lifetime)


class _Server(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup: not in this namespace
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]  # type: ignore[assignment]
        self.setup_environ()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _Quiet(WSGIRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def get_environ(self) -> dict[str, Any]:
        environ = super().get_environ()
        environ["HTTPS"] = "on"      # served over TLS (wsgiref cannot tell)
        return environ


def serve(write: Write, address: str, port: int, cert: str, key: str,
          spec: dict[str, Any]) -> None:
    server = _Server((address, port), _Quiet)
    server.set_app(make_app(spec, write))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
