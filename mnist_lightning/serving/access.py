"""Who is calling, and what they may do: the API token, the origin of a browser's request, the client's address
and id for the per-client limits. docs/security.md states the trust model these implement."""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mnist_lightning.serving.state import ClientLimitsDep, SettingsDep

# declared in the OpenAPI schema only on the routes that need the token (create_app adds it where it applies)
bearer = HTTPBearer(auto_error=False, description="the token the service was started with (MNIST_SERVE_TOKEN)")


@dataclass(frozen=True)
class Caller:
    trusted: bool  # sent the service's token: no per-client limits apply
    address: str  # the connection's address (a trusted proxy's X-Forwarded-For, see settings.trusted_proxies)
    client_id: str | None  # the X-Client-Id header, chosen by the client


def token_matches(given: str | None, token: str | None) -> bool:
    return bool(token) and given is not None and secrets.compare_digest(given.encode(), token.encode())


async def caller(request: Request, settings: SettingsDep) -> Caller:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    trusted = scheme.lower() == "bearer" and token_matches(given.strip(), settings.auth.token)
    address = request.client.host if request.client else "unknown"
    return Caller(trusted, address, request.headers.get("x-client-id"))


CallerDep = Annotated[Caller, Depends(caller)]


async def require_token(
    settings: SettingsDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> None:
    """401 unless the request carries `Authorization: Bearer <the service's token>`."""
    if credentials is None:
        raise HTTPException(
            401,
            "this route needs the service's token: send the header 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not token_matches(credentials.credentials, settings.auth.token):
        raise HTTPException(401, "wrong token", headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


async def same_origin(request: Request, settings: SettingsDep) -> None:
    """403 for a browser's request from a page of another origin not in cors.origins: a web page could otherwise
    make its visitors' browsers post to a service on their machine (a multipart form needs no preflight).
    Clients that are not browsers send no Origin header and are not concerned."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    allowed = settings.cors.origins
    if "*" in allowed or origin in allowed or urlsplit(origin).netloc == request.headers.get("host"):
        return
    raise HTTPException(
        403,
        f"a page of {origin} may not call this service: start it with cors.origins=[{origin}] to allow that origin",
    )


def count(limits, kind: str, caller: Caller, what: str, setting: str) -> None:
    """Count one `kind` against the caller's address; 429 with Retry-After past the setting's limit."""
    if not caller.trusted and (wait := limits.hit(kind, caller.address)):
        seconds = math.ceil(wait)
        raise HTTPException(
            429,
            f"too many {what} from {caller.address}: try again in {seconds} s (limits.{setting})",
            headers={"Retry-After": str(seconds)},
        )


async def within_rate(caller: CallerDep, limits: ClientLimitsDep) -> None:
    """429 once a client address passes limits.requests_per_minute (not for token holders)."""
    count(limits, "requests", caller, "requests", "requests_per_minute")


async def feedback_allowed(caller: CallerDep, limits: ClientLimitsDep) -> None:
    """429 once a client address has sent limits.feedback_per_hour labels in the last hour (not for token holders)."""
    count(limits, "feedback", caller, "labels", "feedback_per_hour")
