"""The OpenAPI 3.1 document of the JSON API, served at /api/v1/openapi.json.

It is the contract: `tests/test_api.py` checks every answer of the API against it, and
fuzzes every operation with schemathesis.
"""

from __future__ import annotations

from typing import Any

from bridge.api.inputs import DEFAULT_LIMIT, ID_MAX, MAX_BODY, MAX_LIMIT
from bridge.api.problems import EXTRA_SLUGS, SLUGS, TYPE_BASE

# --- small builders ----------------------------------------------------------------------


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    out = {**schema, "type": [schema["type"], "null"]}
    if "enum" in schema:
        out["enum"] = [*schema["enum"], None]
    return out


def _obj(
    properties: dict[str, Any],
    required: list[str] | None = None,
    description: str = "",
    examples: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "additionalProperties": False,
        "properties": properties,
        "required": list(properties) if required is None else required,
    }
    if description:
        out["description"] = description
    if examples:
        out["examples"] = examples
    return out


def _json(
    schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }
    if headers:
        out["headers"] = headers
    return out


def _problems(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/Problem{s}"} for s in statuses}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "required": True,
        "description": f"JSON, UTF-8, at most {MAX_BODY} bytes.",
        "content": {"application/json": {"schema": schema}},
    }


ID = {"type": "string", "minLength": 1, "maxLength": ID_MAX}
DATE = {"type": "string", "format": "date"}
DATETIME = {"type": "string", "format": "date-time"}
CLOCK = {"type": "string", "pattern": "^([01][0-9]|2[0-3]):[0-5][0-9]$"}
CHANNEL = {"type": "string", "enum": ["sms", "telegram", "email"]}
REASON = {"type": "string", "enum": ["illness", "appointment", "other", "unspecified"]}
DELIVERY_STATUS = {
    "type": "string",
    "enum": ["queued", "sending", "sent", "delivered", "failed", "dead", "skipped"],
}
LOCATION = {"Location": {"description": "Where the new object is.", "schema": {"type": "string"}}}

ALWAYS = (401, 429, 500, 503)
WITH_BODY = (400, 413, 415, 422)

# --- parameters --------------------------------------------------------------------------

PARAMETERS: dict[str, Any] = {
    "Id": {
        "name": "id",
        "in": "path",
        "required": True,
        "description": "The object's id. One of another unit answers 404, like an unknown one.",
        "schema": ID,
    },
    "UnitId": {
        "name": "unit_id",
        "in": "query",
        "required": False,
        "description": "Only this unit (403 unless the key is scoped to it); "
        "default: every unit of the key.",
        "schema": {"type": "string"},
    },
    "Limit": {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": f"Page size, default {DEFAULT_LIMIT}.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
    },
    "Cursor": {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "The `next_cursor` of the previous page; 400 for anything else.",
        "schema": {"type": "string"},
    },
}

# --- schemas -----------------------------------------------------------------------------

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details (`application/problem+json`).",
        "additionalProperties": False,
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {
                "type": "string",
                "enum": [TYPE_BASE + s for s in (*SLUGS.values(), *EXTRA_SLUGS)],
            },
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "errors": {
                "type": "array",
                "description": "Each field (body member or query parameter) that is wrong.",
                "items": _obj({"field": {"type": "string"}, "message": {"type": "string"}}),
            },
            "sensitive": {
                "type": "array",
                "description": "With type sensitive-content: the categories found.",
                "items": {"type": "string"},
            },
        },
    },
    "Absence": _obj(
        {
            "id": {"type": "string"},
            "student_id": {"type": "string"},
            "student": {"type": "string", "description": "The student's full name."},
            "unit_id": {"type": "string"},
            "unit_type": {"type": "string", "enum": ["school", "sfo"]},
            "from": DATE,
            "to": DATE,
            "from_time": _nullable(CLOCK),
            "to_time": _nullable(CLOCK),
            "reason": REASON,
            "note": {"type": ["string", "null"]},
            "reported_by": {
                "type": ["string", "null"],
                "description": "The guardian's id, or null (the office, or erased).",
            },
            "channel": {"type": "string", "enum": ["sms", "telegram", "email", "api"]},
            "received_at": DATETIME,
            "status": {"type": "string", "enum": ["active", "cancelled"]},
        },
        description="An absence report, as `skolebro export absences` writes it (SPEC 7).",
    ),
    "AbsencePage": _obj(
        {
            "items": {"type": "array", "items": _ref("Absence")},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "Pass as `cursor` for the next page; null on the last page.",
            },
        }
    ),
    "NewAbsence": _obj(
        {
            "student_id": {**ID, "description": "Enrolled (active) in `unit_id`, else 422."},
            "unit_id": {**ID, "description": "One of the key's units, else 403."},
            "from": DATE,
            "to": {**DATE, "description": "Not before `from` (422)."},
            "from_time": {
                **_nullable(CLOCK),
                "description": "Leaving at; only when `from` equals `to`.",
            },
            "to_time": {
                **_nullable(CLOCK),
                "description": "Back at; only when `from` equals `to`, after `from_time`.",
            },
            "reason": REASON,
            "note": {
                "type": ["string", "null"],
                "maxLength": 2000,
                "description": "Stored as `privacy.sensitive_action` says: sensitive spans "
                "redacted to [fjernet] (default), or the whole note dropped (reject).",
            },
            "reported_by": {
                **_nullable(ID),
                "description": "The guardian who phoned in: one with parental responsibility "
                "for the student, else 422. Default null (the office).",
            },
        },
        required=["student_id", "unit_id", "from", "to", "reason"],
        description="An absence phoned in to the office; recorded with channel `api`.",
        examples=[
            {
                "student_id": "s-ola",
                "unit_id": "u-fjell",
                "from": "2026-11-26",
                "to": "2026-11-27",
                "reason": "illness",
                "note": "Mor ringte kl 07.50",
            },
            {
                "student_id": "s-ola",
                "unit_id": "u-fjell-sfo",
                "from": "2026-11-26",
                "to": "2026-11-26",
                "from_time": "14:00",
                "to_time": None,
                "reason": "appointment",
                "reported_by": "gd-kjersti",
            },
        ],
    ),
    "Message": _obj(
        {
            "id": {"type": "string"},
            "direction": {"type": "string", "enum": ["in", "out"]},
            "channel": {
                "type": "string",
                "description": "sms, telegram or email; `api` for a reply sent through this API.",
            },
            "author": {
                "type": "string",
                "description": "A guardian or staff id, a unit id, or the API key's id.",
            },
            "body": {"type": ["string", "null"], "description": "Null after retention or erasure."},
            "sent_at": DATETIME,
            "sensitive": {"type": "array", "items": {"type": "string"}},
        }
    ),
    "ThreadSummary": _obj(
        {
            "id": {"type": "string"},
            "unit_id": {"type": "string"},
            "student_id": {"type": "string"},
            "guardian_ids": {"type": "array", "items": {"type": "string"}},
            "created_at": DATETIME,
            "last_message_at": DATETIME,
            "messages": {
                "type": "array",
                "items": _ref("Message"),
                "description": "Only with `include_messages=true`: the messages (since `since`).",
            },
        },
        required=["id", "unit_id", "student_id", "guardian_ids", "created_at", "last_message_at"],
    ),
    "ThreadPage": _obj(
        {
            "items": {"type": "array", "items": _ref("ThreadSummary")},
            "next_cursor": {"type": ["string", "null"]},
        }
    ),
    "Thread": _obj(
        {
            "id": {"type": "string"},
            "unit_id": {"type": "string"},
            "student_id": {"type": "string"},
            "guardian_ids": {"type": "array", "items": {"type": "string"}},
            "created_at": DATETIME,
            "last_message_at": DATETIME,
            "messages": {"type": "array", "items": _ref("Message")},
        },
        description="A thread with all its messages, as `skolebro export threads` writes it.",
    ),
    "NewReply": _obj(
        {
            "text": {"type": "string", "minLength": 1, "maxLength": 3000},
            "staff_id": {
                **_nullable(ID),
                "description": "The author: a staff member of the thread's unit (else 422). "
                "Default: the API key's id.",
            },
        },
        required=["text"],
        examples=[{"text": "Takk for beskjed! Vi snakkes i morgen.", "staff_id": "st-lise"}],
    ),
    "Reply": _obj(
        {
            "message": _ref("Message"),
            "delivery": {
                "description": "The delivery to the guardian; null when no channel is open.",
                "oneOf": [
                    {"type": "null"},
                    _obj(
                        {
                            "id": {"type": "string"},
                            "channel": CHANNEL,
                            "status": DELIVERY_STATUS,
                        }
                    ),
                ],
            },
        }
    ),
    "NewAnnouncement": _obj(
        {
            "unit_id": {**ID, "description": "One of the key's units, else 403."},
            "text": {
                "type": "string",
                "minLength": 1,
                "maxLength": 5000,
                "description": "At most 10 SMS segments with the unit's name before it (422).",
            },
            "subject": {"type": ["string", "null"], "maxLength": 200},
            "group_ids": {
                "type": "array",
                "maxItems": 200,
                "items": ID,
                "description": "Groups of the unit (422 for an unknown one).",
            },
            "student_ids": {
                "type": "array",
                "maxItems": 1000,
                "items": ID,
                "description": "Students of the unit; with groups: the union of their guardians.",
            },
            "urgent": {
                "type": "boolean",
                "description": "Ignores quiet hours and opt-outs. Default false.",
            },
        },
        required=["unit_id", "text"],
        description="No groups and no students: every guardian of the unit.",
        examples=[
            {"unit_id": "u-fjell", "text": "Husk gymtøy i morgen.", "group_ids": ["g-5b"]},
            {"unit_id": "u-fjell", "text": "Skolen er stengt i dag.", "urgent": True},
        ],
    ),
    "AnnouncementCreated": _obj(
        {
            "announcement_id": {"type": "string"},
            "deliveries": {
                "type": "integer",
                "minimum": 0,
                "description": "First deliveries, one per guardian; fallbacks not counted.",
            },
            "skipped": {"type": "integer", "minimum": 0},
            "not_before": {
                "type": ["string", "null"],
                "format": "date-time",
                "description": "When quiet hours hold the deliveries back.",
            },
        }
    ),
    "Announcement": _obj(
        {
            "id": {"type": "string"},
            "unit_id": {"type": "string"},
            "group_ids": {"type": "array", "items": {"type": "string"}},
            "student_ids": {"type": "array", "items": {"type": "string"}},
            "subject": {"type": ["string", "null"]},
            "text": {"type": "string"},
            "urgent": {"type": "boolean"},
            "created_by": {"type": ["string", "null"]},
            "created_at": DATETIME,
            "deliveries": {"type": "integer", "minimum": 0},
            "summary": {
                "type": "object",
                "description": "Deliveries per channel (`none`: no channel was open) and status.",
                "propertyNames": {"enum": ["sms", "telegram", "email", "none"]},
                "additionalProperties": {
                    "type": "object",
                    "propertyNames": DELIVERY_STATUS,
                    "additionalProperties": {"type": "integer", "minimum": 1},
                },
            },
        }
    ),
    "ChannelState": _obj(
        {
            "channel": CHANNEL,
            "address": {
                "type": ["string", "null"],
                "description": "Number, e-mail address or Telegram chat id; always null for a "
                "protected guardian, and when the guardian has none on this channel.",
            },
            "has_address": {"type": "boolean"},
            "available": {
                "type": "boolean",
                "description": "Has an address that is neither opted out nor dead.",
            },
            "opted_out": {"type": "boolean"},
            "dead": {"type": "boolean"},
        }
    ),
    "ContactState": _obj(
        {
            "guardian_id": {"type": "string"},
            "active": {"type": "boolean"},
            "protected": {"type": "boolean"},
            "channels": {
                "type": "array",
                "items": _ref("ChannelState"),
                "description": "The guardian's channels in their order.",
            },
            "first_available": _nullable(CHANNEL),
        }
    ),
}

_PROBLEM_TEXT = {
    400: "Bad request: the body is not JSON, or a query parameter is wrong or unknown.",
    401: "No API key, or one that is unknown or revoked.",
    403: "The key is not scoped to that unit, or is read-only.",
    404: "No such object, or one of another unit.",
    413: f"The body is larger than {MAX_BODY} bytes.",
    415: "The body is not application/json.",
    422: "The body is JSON but not valid: see `errors`.",
    429: "Too many requests for this key.",
    500: "Unexpected error; nothing internal is shown.",
    503: "The store is unavailable; try again.",
}


def _problem_response(status: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": _PROBLEM_TEXT[status],
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }
    if status == 401:
        out["headers"] = {"WWW-Authenticate": {"schema": {"type": "string"}}}
    if status in (429, 503):
        out["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait.",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return out


def _op(operation_id: str, summary: str, responses: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, "responses": responses, **more}


def _param(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/parameters/{name}"}


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


PATHS: dict[str, Any] = {
    "/announcements": {
        "post": _op(
            "createAnnouncement",
            "Queue an announcement to the guardians of a unit, groups or students.",
            {
                "201": _json(_ref("AnnouncementCreated"), "Queued.", LOCATION),
                **_problems(*WITH_BODY, 403, *ALWAYS),
            },
            requestBody=_body(_ref("NewAnnouncement")),
        )
    },
    "/announcements/{id}": {
        "get": _op(
            "getAnnouncement",
            "An announcement with its deliveries counted per channel and status.",
            {
                "200": _json(_ref("Announcement"), "The announcement."),
                **_problems(400, 404, *ALWAYS),
            },
            parameters=[_param("Id")],
        )
    },
    "/absences": {
        "get": _op(
            "listAbsences",
            "Absence reports of the key's units overlapping a date range, cancelled included.",
            {
                "200": _json(_ref("AbsencePage"), "A page, in creation order."),
                **_problems(400, 403, *ALWAYS),
            },
            parameters=[
                _param("UnitId"),
                _query("from", DATE, "First day (local date); default today."),
                _query("to", DATE, "Last day; default today, or `from` when that is later."),
                _query(
                    "status",
                    {"type": "string", "enum": ["active", "cancelled"]},
                    "Only reports with this status.",
                ),
                _param("Limit"),
                _param("Cursor"),
            ],
        ),
        "post": _op(
            "createAbsence",
            "Record an absence phoned in to the office (channel api).",
            {
                "201": _json(_ref("Absence"), "Recorded.", LOCATION),
                **_problems(*WITH_BODY, 403, *ALWAYS),
            },
            requestBody=_body(_ref("NewAbsence")),
        ),
    },
    "/absences/{id}": {
        "get": _op(
            "getAbsence",
            "One absence report.",
            {"200": _json(_ref("Absence"), "The report."), **_problems(400, 404, *ALWAYS)},
            parameters=[_param("Id")],
        )
    },
    "/threads": {
        "get": _op(
            "listThreads",
            "Threads of the key's units.",
            {
                "200": _json(_ref("ThreadPage"), "A page, in creation order."),
                **_problems(400, 403, *ALWAYS),
            },
            parameters=[
                _param("UnitId"),
                _query(
                    "since",
                    DATETIME,
                    "Only threads with a message since then (no offset: local time; a date: "
                    "its start).",
                ),
                _query(
                    "include_messages",
                    {"type": "boolean"},
                    "Include the messages (those since `since`). Default false.",
                ),
                _param("Limit"),
                _param("Cursor"),
            ],
        )
    },
    "/threads/{id}": {
        "get": _op(
            "getThread",
            "A thread with all its messages.",
            {"200": _json(_ref("Thread"), "The thread."), **_problems(400, 404, *ALWAYS)},
            parameters=[_param("Id")],
        )
    },
    "/threads/{id}/replies": {
        "post": _op(
            "replyToThread",
            "A staff reply: stored in the thread and sent to the guardian on the channel they "
            "last wrote on in it, else their first open channel. A reply with sensitive content "
            "is not stored or sent (422, type sensitive-content).",
            {
                "201": _json(_ref("Reply"), "Stored and queued."),
                **_problems(*WITH_BODY, 403, 404, *ALWAYS),
            },
            parameters=[_param("Id")],
            requestBody=_body(_ref("NewReply")),
        )
    },
    "/guardians/{id}/contact-state": {
        "get": _op(
            "getContactState",
            "A guardian's channels and whether each can reach them. Visible when one of the "
            "guardian's students (with parental responsibility) is in one of the key's units. "
            "A protected guardian's addresses are never shown.",
            {
                "200": _json(_ref("ContactState"), "The contact state."),
                **_problems(400, 404, *ALWAYS),
            },
            parameters=[_param("Id")],
        )
    },
    "/openapi.json": {
        "get": _op(
            "getOpenApi",
            "This document. No key needed.",
            {"200": _json({"type": "object"}, "The OpenAPI document.")},
            security=[],
        )
    },
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "skolebro API",
        "version": "1.0.0",
        "description": (
            "JSON API for the school's own systems. Authenticate with `Authorization: Bearer "
            "<key>` (`skolebro apikey create --unit U [--read-only]`). A key sees and acts "
            "only for its units: naming another unit answers 403, and an object of another "
            "unit answers 404, as if it did not exist. Read-only keys get 403 on every POST. "
            "Each key may make 20 requests a second on average, in bursts of 40 (429 with "
            "Retry-After past that). Errors are RFC 9457 problem details. Times are ISO 8601 "
            "in the bridge's timezone; dates are local dates."
        ),
    },
    "servers": [{"url": "/api/v1"}],
    "security": [{"bearerAuth": []}],
    "paths": PATHS,
    "components": {
        "securitySchemes": {"bearerAuth": {"type": "http", "scheme": "bearer"}},
        "parameters": PARAMETERS,
        "schemas": SCHEMAS,
        "responses": {f"Problem{s}": _problem_response(s) for s in _PROBLEM_TEXT},
    },
}
