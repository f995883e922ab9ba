"""Admin authentication: `Authorization: Bearer $ADMIN_TOKEN`, with Starlette's machinery.

The middleware runs on the admin routes only (see `ApiRoute` in engine/api.py), so it can
refuse at once, with the statuses users know: 401 without a bearer token, 403 with a wrong
one or while ADMIN_TOKEN is empty. /predict does not pay for it, and a token meant for some
other system on a prediction request is never judged. `requires("admin")` on the endpoint
is what lets it run at all: a route that lost its middleware refuses instead of serving.
"""

from __future__ import annotations

import hmac

from starlette.authentication import AuthCredentials, AuthenticationBackend, AuthenticationError, SimpleUser
from starlette.middleware import Middleware
from starlette.middleware.authentication import AuthenticationMiddleware
from starlette.requests import HTTPConnection
from starlette.responses import Response

from engine.contract import RequestError, error_response

ADMIN_SCOPE = "admin"


class AdminRefused(AuthenticationError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class AdminTokenBackend(AuthenticationBackend):
    """Grants the admin scope to the bearer of the runtime's ADMIN_TOKEN (compared in constant time)."""

    async def authenticate(self, conn: HTTPConnection) -> tuple[AuthCredentials, SimpleUser]:
        scheme, _, token = conn.headers.get("authorization", "").partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AdminRefused(401, "admin route: send Authorization: Bearer <ADMIN_TOKEN>")
        # The settings live in the runtime, which only the lifespan state holds.
        expected = conn.state.runtime.settings.admin_token
        if not expected:
            raise AdminRefused(403, "admin routes are off: ADMIN_TOKEN is not set")
        if not hmac.compare_digest(token.encode(), expected.encode()):
            raise AdminRefused(403, "wrong admin token")
        return AuthCredentials([ADMIN_SCOPE]), SimpleUser(ADMIN_SCOPE)


def refuse(conn: HTTPConnection, exc: AuthenticationError) -> Response:
    status = exc.status if isinstance(exc, AdminRefused) else 401
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(status, str(exc), headers=headers)


ADMIN_AUTH = [Middleware(AuthenticationMiddleware, backend=AdminTokenBackend(), on_error=refuse)]


def check_bearer(conn: HTTPConnection, expected: str, setting: str) -> None:
    """For a route open to all while `expected` is empty, and to its bearer once it is set."""
    if not expected:
        return
    scheme, _, token = conn.headers.get("authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise RequestError(401, f"send Authorization: Bearer <{setting}>")
    if not hmac.compare_digest(token.encode(), expected.encode()):
        raise RequestError(403, f"wrong bearer token ({setting})")
