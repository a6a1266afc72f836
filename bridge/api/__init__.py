"""The JSON API for the school's own systems, mounted at /api/v1 (SPEC section 5).

Wiring, in `bridge.app.Bridge.__init__` after `build_app`:

    from bridge.api import add_api
    add_api(self.app, self.engine, settings, on_outbound=self.outbox.wake.set)

or, equivalently, `app.add_subapp("/api/v1", api_routes(engine, settings))`.

Endpoints (all JSON; the full contract is `OPENAPI`, served at /api/v1/openapi.json):

    POST /announcements                  GET /announcements/{id}
    GET  /absences?unit_id&from&to&status&limit&cursor
    GET  /absences/{id}                  POST /absences
    GET  /threads?unit_id&since&include_messages&limit&cursor
    GET  /threads/{id}                   POST /threads/{id}/replies
    GET  /guardians/{id}/contact-state   GET  /openapi.json (no key)

Auth is `Authorization: Bearer <key>`: missing, unknown or revoked keys get 401. A
`unit_id` the key is not scoped to gets 403; an object of another unit gets 404, the
same as one that does not exist. Read-only keys get 403 on every POST. Each key has a
token bucket (default 20 requests/s, bursts of 40); past it, 429 with Retry-After.
Errors are RFC 9457 problem documents; an unexpected error is a bare 500 problem, and
the log gets the exception's type and frames (code locations), never its message or
any request data: logs carry ids only.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from pathlib import Path

from aiohttp import web
from aiohttp.typedefs import Handler
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine

from bridge.api.auth import ApiKey, TokenBucket, bearer_token, find_key
from bridge.api.handlers import API_KEY, Handlers
from bridge.api.openapi import OPENAPI
from bridge.api.problems import Problem, json_response
from bridge.config import Settings

__all__ = ["API_PREFIX", "OPENAPI", "ApiKey", "add_api", "api_routes"]

API_PREFIX = "/api/v1"
DEFAULT_RATE = 20.0
DEFAULT_BURST = 40

log = logging.getLogger("skolebro.api")

_UNAVAILABLE = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.TimeoutError,
    ConnectionError,
    TimeoutError,
)


def _route_label(request: web.Request) -> str:
    """The route's template (`/threads/{id}`), never the raw path: no caller data in logs."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "?"


def api_routes(
    engine: AsyncEngine,
    settings: Settings,
    *,
    rate: float = DEFAULT_RATE,
    burst: int = DEFAULT_BURST,
    on_outbound: Callable[[], None] | None = None,
) -> web.Application:
    """The API as a sub-application, to mount with `app.add_subapp("/api/v1", sub)`.

    `on_outbound` is called after a request queued deliveries (announcements, replies),
    e.g. the outbox worker's `wake.set`, so that they go out at once.
    """
    handlers = Handlers(engine, settings, on_outbound)
    bucket = TokenBucket(rate, burst)

    async def authenticate(request: web.Request) -> ApiKey:
        token = bearer_token(request.headers.get("Authorization"))
        key = await find_key(engine, token) if token else None
        if key is None:
            challenge = 'Bearer realm="skolebro"'
            if token or request.headers.get("Authorization"):
                challenge += ', error="invalid_token"'
            raise Problem(
                401,
                "a valid API key is required: Authorization: Bearer <key>",
                headers={"WWW-Authenticate": challenge},
            )
        return key

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await answer(request, handler)
        response.headers.setdefault("Cache-Control", "no-store")  # personal data: never cached
        return response

    async def answer(request: web.Request, handler: Handler) -> web.StreamResponse:
        try:
            if request.match_info.route.name != "openapi":
                key = await authenticate(request)
                wait = bucket.take(key.id)
                if wait > 0:
                    raise Problem(
                        429,
                        f"more than {rate:g} requests a second for this key",
                        headers={"Retry-After": TokenBucket.retry_after(wait)},
                    )
                request[API_KEY] = key
            return await handler(request)
        except Problem as problem:
            return problem.response()
        except web.HTTPException as e:
            if e.status < 400:
                raise
            headers = {}
            if isinstance(e, web.HTTPMethodNotAllowed):
                headers["Allow"] = ", ".join(sorted(e.allowed_methods))
            detail = {404: "no such endpoint", 405: "method not allowed here"}.get(
                e.status, e.reason
            )
            return Problem(e.status, detail, headers=headers).response()
        except _UNAVAILABLE as e:
            label = _route_label(request)
            log.warning(
                "api %s %s: store unavailable (%s)", request.method, label, type(e).__name__
            )
            return Problem(
                503, "the store is unavailable; try again", headers={"Retry-After": "5"}
            ).response()
        except Exception as e:
            # Where, not what: file, line and function of each frame; no source text, no values.
            frames = " < ".join(
                f"{Path(f.filename).name}:{f.lineno} {f.name}"
                for f in reversed(traceback.extract_tb(e.__traceback__))
            )
            log.error(
                "api %s %s: unexpected %s at %s",
                request.method,
                _route_label(request),
                type(e).__name__,
                frames,
            )
            return Problem(500, "an unexpected error; it has been logged").response()

    async def openapi(request: web.Request) -> web.StreamResponse:
        return json_response(OPENAPI)  # public, and lenient: any query is ignored

    sub = web.Application(middlewares=[middleware])
    r = sub.router
    r.add_post("/announcements", handlers.create_announcement)
    r.add_get("/announcements/{id}", handlers.get_announcement)
    r.add_get("/absences", handlers.list_absences)
    r.add_post("/absences", handlers.create_absence)
    r.add_get("/absences/{id}", handlers.get_absence)
    r.add_get("/threads", handlers.list_threads)
    r.add_get("/threads/{id}", handlers.get_thread)
    r.add_post("/threads/{id}/replies", handlers.post_reply)
    r.add_get("/guardians/{id}/contact-state", handlers.contact_state)
    r.add_get("/openapi.json", openapi, name="openapi")
    return sub


def add_api(
    app: web.Application,
    engine: AsyncEngine,
    settings: Settings,
    *,
    rate: float = DEFAULT_RATE,
    burst: int = DEFAULT_BURST,
    on_outbound: Callable[[], None] | None = None,
) -> web.Application:
    """Mount the API at /api/v1 on `app` (before it starts); returns the sub-application."""
    sub = api_routes(engine, settings, rate=rate, burst=burst, on_outbound=on_outbound)
    app.add_subapp(API_PREFIX, sub)
    return sub
