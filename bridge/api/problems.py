"""RFC 9457 problem details: every error the JSON API answers is one of these."""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import partial
from http import HTTPStatus
from typing import Any

from aiohttp import web

PROBLEM_TYPE = "application/problem+json"
TYPE_BASE = "urn:skolebro:problem:"

# The `type` slug of each kind of problem; the document lists them as an enum.
SLUGS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation",
    429: "rate-limited",
    500: "internal",
    503: "unavailable",
}
EXTRA_SLUGS = ("read-only-key", "sensitive-content")

dumps = partial(json.dumps, ensure_ascii=False, separators=(",", ":"))


class Problem(Exception):
    """Raised anywhere in a handler; the middleware turns it into a problem response."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        slug: str | None = None,
        errors: list[dict[str, str]] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.slug = slug or SLUGS.get(status, "bad-request")
        self.errors = errors
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})

    def response(self) -> web.Response:
        body: dict[str, Any] = {
            "type": TYPE_BASE + self.slug,
            "title": HTTPStatus(self.status).phrase,
            "status": self.status,
            "detail": self.detail,
        }
        if self.errors:
            body["errors"] = self.errors
        body.update(self.extra)
        return web.Response(
            status=self.status,
            text=dumps(body),
            content_type=PROBLEM_TYPE,
            charset="utf-8",
            headers=self.headers,
        )


def invalid(field: str, message: str) -> Problem:
    """A 422 for one field of the request body."""
    return Problem(422, f"{field}: {message}", errors=[{"field": field, "message": message}])


def bad_param(name: str, message: str) -> Problem:
    """A 400 for one query parameter."""
    return Problem(400, f"{name}: {message}", errors=[{"field": name, "message": message}])


def json_response(
    data: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=dumps(data),
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )
