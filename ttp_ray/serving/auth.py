"""Bearer-token auth: where the token comes from, and the ASGI middleware that checks it.

The token is never part of the config or the repo: it is read from a file named in the config, or from an
environment variable. With neither, the service refuses to start unless `allow_unauthenticated: true` is set.
Comparison is constant-time (`hmac.compare_digest`) so response timing does not leak a prefix of the token.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from ttp_ray.errors import TTPValidationError
from ttp_ray.serving.config import AuthConfig
from ttp_ray.serving.errors import error_response

log = logging.getLogger(__name__)

# Paths a load balancer or client may read without a token (no user data behind them).
PUBLIC_PATHS = frozenset({"/healthz", "/openapi.json"})


def resolve_token(cfg: AuthConfig) -> str | None:
    """Return the configured token, or None when `allow_unauthenticated` is set and no token exists.

    Raises:
        TTPValidationError: the token file is missing/empty, the token is too short, or there is no token
            and unauthenticated serving was not allowed explicitly.
    """
    token = _read_token_file(cfg.token_file) if cfg.token_file else os.environ.get(cfg.token_env, "").strip()
    if token:
        if len(token) < cfg.min_token_chars:
            source = "auth.token_file" if cfg.token_file else f"${cfg.token_env}"
            raise TTPValidationError(
                f"API token from {source} is {len(token)} characters; use at least {cfg.min_token_chars} "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)",
                parameter="auth.min_token_chars",
                value=len(token),
            )
        return token
    if cfg.allow_unauthenticated:
        log.warning("serving WITHOUT authentication (auth.allow_unauthenticated: true)")
        return None
    raise TTPValidationError(
        f"no API token: set ${cfg.token_env} or auth.token_file, or set auth.allow_unauthenticated: true "
        "to serve without one",
        parameter="auth",
    )


def _read_token_file(path: str) -> str:
    p = Path(path).expanduser()
    if not p.is_file():
        raise TTPValidationError(f"auth.token_file not found: {p}", parameter="auth.token_file", value=str(p))
    lines = p.read_text().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise TTPValidationError(f"auth.token_file is empty: {p}", parameter="auth.token_file", value=str(p))
    if p.stat().st_mode & 0o077:
        log.warning("auth.token_file %s is readable by group/others; chmod 600 it", p)
    return token


class BearerAuthMiddleware:
    """Reject HTTP requests without `Authorization: Bearer <token>` (401) before anything reads the body."""

    def __init__(self, app: ASGIApp, token: str | None, public_paths: frozenset[str] = PUBLIC_PATHS) -> None:
        self.app = app
        self._token = token.encode() if token else None
        self._public = public_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._token is None or scope["type"] != "http" or self._route(scope) in self._public:
            await self.app(scope, receive, send)
            return
        if not self._authorized(scope):
            response = error_response(
                401, "missing or invalid bearer token", err_type="authentication_error", param="Authorization"
            )
            response.headers["WWW-Authenticate"] = "Bearer"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    @staticmethod
    def _route(scope: Scope) -> str:
        # Under a Serve route prefix, `path` includes the prefix and `root_path` holds it.
        path: str = scope.get("path", "")
        root = scope.get("root_path", "")
        return path[len(root):] if root and path.startswith(root) else path

    def _authorized(self, scope: Scope) -> bool:
        assert self._token is not None
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, presented = value.partition(b" ")
                # compare_digest on equal-type bytes runs in time independent of where they differ.
                return scheme.lower() == b"bearer" and hmac.compare_digest(presented.strip(), self._token)
        return False
