"""The schema: SQLAlchemy Core tables for every entity in SPEC section 1.

Roster entities keep the school system's own ids as primary keys. Everything the
bridge creates gets a sortable text id from `bridge.store.ids.new_id`. Times are
stored in UTC (see `UTCDateTime`); dates are local school dates.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    DateTime,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on SQLite and PostgreSQL alike."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _id(name: str = "id") -> Column[Any]:
    return Column(name, String(64), primary_key=True)


def _created() -> Column[Any]:
    return Column("created_at", UTCDateTime(), nullable=False)


def _updated() -> Column[Any]:
    return Column("updated_at", UTCDateTime(), nullable=False)


# --- the roster ---------------------------------------------------------------

units = Table(
    "units",
    metadata,
    _id(),
    Column("name", Text, nullable=False),
    Column("unit_type", String(8), nullable=False),
    Column("email", Text),
    Column("phone", String(32)),
    Column("active", Boolean, nullable=False, default=True),
    _created(),
    _updated(),
    CheckConstraint("unit_type IN ('school', 'sfo')", name="unit_type"),
)

groups = Table(
    "groups",
    metadata,
    Column("unit_id", ForeignKey("units.id"), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("active", Boolean, nullable=False, default=True),
    _created(),
    _updated(),
)

closed_days = Table(
    "closed_days",
    metadata,
    Column("unit_id", ForeignKey("units.id"), primary_key=True),
    Column("from_date", Date, primary_key=True),
    Column("to_date", Date, primary_key=True),
    Column("name", Text, nullable=False, default=""),
    _created(),
)

students = Table(
    "students",
    metadata,
    _id(),
    Column("first_name", Text, nullable=False),
    Column("last_name", Text, nullable=False),
    Column("unit_id", ForeignKey("units.id"), nullable=False, index=True),
    Column("sfo_unit_id", ForeignKey("units.id"), index=True),
    Column("active", Boolean, nullable=False, default=True),
    _created(),
    _updated(),
)

student_groups = Table(
    "student_groups",
    metadata,
    Column("student_id", ForeignKey("students.id"), primary_key=True),
    Column("unit_id", String(64), primary_key=True),
    Column("group_id", String(64), primary_key=True),
    ForeignKeyConstraint(["unit_id", "group_id"], ["groups.unit_id", "groups.id"]),
    Index("ix_student_groups_group", "unit_id", "group_id"),
)

guardians = Table(
    "guardians",
    metadata,
    _id(),
    Column("first_name", Text, nullable=False),
    Column("last_name", Text, nullable=False),
    Column("mobile", String(32), index=True),  # E.164; sender lookup for SMS
    Column("email", Text, index=True),  # lower-cased; sender lookup for e-mail
    Column("language", String(2), nullable=False),
    Column("channels", Text, nullable=False),  # "telegram,sms,email", in order
    Column("protected", Boolean, nullable=False, default=False),
    Column("digest", Boolean, nullable=False, default=False),
    # Position in the roster: a shared contact point's reports name the first guardian.
    Column("roster_order", BigInteger, nullable=False, default=0),
    Column("active", Boolean, nullable=False, default=True),
    _created(),
    _updated(),
)

guardian_students = Table(
    "guardian_students",
    metadata,
    Column("guardian_id", ForeignKey("guardians.id"), primary_key=True),
    Column("student_id", ForeignKey("students.id"), primary_key=True, index=True),
    # No parental responsibility: no information about the student, no acting for them.
    Column("restricted", Boolean, nullable=False, default=False),
)

staff = Table(
    "staff",
    metadata,
    _id(),
    Column("first_name", Text, nullable=False),
    Column("last_name", Text, nullable=False),
    Column("email", Text, nullable=False, index=True),
    Column("language", String(2)),
    Column("active", Boolean, nullable=False, default=True),
    _created(),
    _updated(),
)

staff_units = Table(
    "staff_units",
    metadata,
    Column("staff_id", ForeignKey("staff.id"), primary_key=True),
    Column("unit_id", ForeignKey("units.id"), primary_key=True, index=True),
    Column("notify", String(8), nullable=False),
    # ";"-free list of followed group ids; empty means the whole unit.
    Column("groups", JSON, nullable=False, default=list),
    Column("active", Boolean, nullable=False, default=True),
    CheckConstraint("notify IN ('each', 'digest', 'both')", name="notify"),
)

# --- channel identities and their state -----------------------------------------

telegram_links = Table(
    "telegram_links",
    metadata,
    Column("chat_id", BigInteger, primary_key=True),
    Column("guardian_id", ForeignKey("guardians.id"), primary_key=True, index=True),
    Column("user_id", BigInteger),
    Column("linked_at", UTCDateTime(), nullable=False),
)

contact_points = Table(
    "contact_points",
    metadata,
    # One row per address on a channel (E.164 number, lower-cased e-mail, chat id).
    Column("channel", String(16), primary_key=True),
    Column("address", Text, primary_key=True),
    Column("opted_out_at", UTCDateTime()),
    Column("opted_in_at", UTCDateTime()),
    Column("dead_at", UTCDateTime()),  # permanently undeliverable (invalid number, bot blocked)
    Column("dead_reason", Text),
    Column("media_notice_on", Date),  # last day the parent was told only text is received
    _updated(),
)

unknown_senders = Table(
    "unknown_senders",
    metadata,
    # Only a hash of the address: an unknown number is not personal data we may keep.
    Column("channel", String(16), primary_key=True),
    Column("address_hash", String(64), primary_key=True),
    Column("last_reply_at", UTCDateTime()),
    Column("last_seen_at", UTCDateTime(), nullable=False),
)

link_codes = Table(
    "link_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("guardian_id", ForeignKey("guardians.id"), nullable=False, index=True),
    Column("channel", String(16), nullable=False),
    _created(),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("used_at", UTCDateTime()),
)

reply_tokens = Table(
    "reply_tokens",
    metadata,
    # Reply-To addresses r-<token>@reply_domain: only a hash is kept, bound to one
    # recipient (guardian or staff) and, for staff and thread mail, one thread.
    Column("token_hash", String(64), primary_key=True),
    Column("recipient_kind", String(8), nullable=False),  # "guardian", "staff" or "unit"
    Column("recipient_id", String(64), nullable=False),
    Column("address", Text, nullable=False),  # the only sender a reply is taken from
    Column("thread_id", ForeignKey("threads.id")),
    Column("unit_id", ForeignKey("units.id")),
    _created(),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
    CheckConstraint("recipient_kind IN ('guardian', 'staff', 'unit')", name="recipient_kind"),
)

# --- conversations --------------------------------------------------------------

threads = Table(
    "threads",
    metadata,
    _id(),
    Column("guardian_id", ForeignKey("guardians.id"), nullable=False),
    Column("unit_id", ForeignKey("units.id"), nullable=False),
    Column("student_id", ForeignKey("students.id"), nullable=False),
    Column("sensitive_notice_sent", Boolean, nullable=False, default=False),
    _created(),
    Column("last_message_at", UTCDateTime(), nullable=False),
    UniqueConstraint("guardian_id", "unit_id", "student_id"),
    Index("ix_threads_unit_last", "unit_id", "last_message_at"),
)

messages = Table(
    "messages",
    metadata,
    _id(),
    Column("thread_id", ForeignKey("threads.id"), nullable=False),
    Column("direction", String(3), nullable=False),
    Column("channel", String(16), nullable=False),
    Column("author", Text, nullable=False),  # guardian or staff id
    Column("body", Text),  # None after retention or erasure
    Column("sensitive", JSON, nullable=False, default=list),
    Column("sent_at", UTCDateTime(), nullable=False),
    Column("inbound_event_id", ForeignKey("inbound_events.id"), index=True),
    Column("provider_id", Text),
    CheckConstraint("direction IN ('in', 'out')", name="direction"),
    Index("ix_messages_thread_sent", "thread_id", "sent_at"),
)

conversations = Table(
    "conversations",
    metadata,
    # Open dialogue state per sender contact point: a pending question, the latest
    # absence message (for undo), what an SMS reply would answer.
    Column("channel", String(16), primary_key=True),
    Column("address", Text, primary_key=True),
    Column("state", JSON, nullable=False),
    Column("expires_at", UTCDateTime()),
    _updated(),
)

# --- absences --------------------------------------------------------------------

absences = Table(
    "absences",
    metadata,
    _id(),
    Column("student_id", ForeignKey("students.id"), nullable=False, index=True),
    Column("unit_id", ForeignKey("units.id"), nullable=False),
    Column("from_date", Date, nullable=False),
    Column("to_date", Date, nullable=False),
    Column("from_time", String(5)),
    Column("to_time", String(5)),
    Column("reason", String(16), nullable=False),
    Column("note", Text),
    Column("reported_by", ForeignKey("guardians.id")),  # None after erasure
    Column("channel", String(16), nullable=False),
    Column("received_at", UTCDateTime(), nullable=False),
    Column("status", String(16), nullable=False, default="active"),
    Column("inbound_event_id", ForeignKey("inbound_events.id"), index=True),
    Column("split_from", String(64)),  # the report a withdrawal split this one off
    _created(),
    _updated(),
    CheckConstraint("status IN ('active', 'cancelled')", name="status"),
    CheckConstraint("reason IN ('illness', 'appointment', 'other', 'unspecified')", name="reason"),
    CheckConstraint("from_date <= to_date", name="date_order"),
    Index("ix_absences_unit_dates", "unit_id", "from_date", "to_date"),
)

# --- outbound ---------------------------------------------------------------------


REPLY_QUEUED = "status = 'queued' AND kind = 'reply'"


def _where(condition: str) -> dict[str, Any]:
    where = text(condition)
    return {"sqlite_where": where, "postgresql_where": where}


def _only_set(column: str) -> dict[str, Any]:
    """A partial index's condition: only the rows where `column` has a value.

    A new delivery has no provider id, lease or fallback, so a fan-out of 100,000 of
    them writes nothing to such an index. Lookups by value (`=`, `IN`, `<`) imply the
    condition, so SQLite and PostgreSQL use the index for them.
    """
    return _where(f"{column} IS NOT NULL")


announcements = Table(
    "announcements",
    metadata,
    _id(),
    Column("unit_id", ForeignKey("units.id"), nullable=False, index=True),
    Column("group_ids", JSON, nullable=False, default=list),
    Column("student_ids", JSON, nullable=False, default=list),
    Column("subject", Text),
    Column("text", Text, nullable=False),
    Column("urgent", Boolean, nullable=False, default=False),
    Column("created_by", Text),  # "cli", an API key id, a staff id
    _created(),
)

deliveries = Table(
    "deliveries",
    metadata,
    _id(),
    # What is being delivered: an announcement, a confirmation, a reply, a notification...
    Column("kind", String(16), nullable=False),
    Column("announcement_id", ForeignKey("announcements.id"), index=True),
    Column("guardian_id", ForeignKey("guardians.id"), index=True),
    Column("staff_id", ForeignKey("staff.id")),
    Column("thread_id", ForeignKey("threads.id")),
    Column("channel", String(16), nullable=False),
    Column("address", Text),
    Column("subject", Text),
    Column("body", Text),
    Column("priority", String(8), nullable=False, default="normal"),
    Column("status", String(16), nullable=False, default="queued"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until", UTCDateTime()),
    Column("provider_id", Text),
    Column("last_error", Text),
    Column("segments", Integer),  # SMS segments, for cost reporting
    Column("fallback_of", ForeignKey("deliveries.id")),
    _created(),
    _updated(),
    CheckConstraint(
        "status IN ('queued', 'sending', 'sent', 'delivered', 'failed', 'dead', 'skipped')",
        name="status",
    ),
    CheckConstraint("priority IN ('urgent', 'normal', 'bulk')", name="priority"),
    Index("ix_deliveries_due", "status", "next_attempt_at"),
    # The claim: due deliveries of one channel and priority, oldest first, no sort.
    Index("ix_deliveries_claim", "channel", "status", "priority", "next_attempt_at"),
    # Status callbacks find their delivery by the provider's id.
    Index("ix_deliveries_provider_id", "provider_id", **_only_set("provider_id")),
    # The claim of expired leases, oldest first.
    Index("ix_deliveries_lease", "channel", "status", "lease_until", **_only_set("lease_until")),
    # Fallbacks of a delivery: retry's check, and the foreign key's when one is deleted.
    Index("ix_deliveries_fallback_of", "fallback_of", **_only_set("fallback_of")),
    # Replies to parents are claimed before anything else, even an urgent storm's
    # thousands of deliveries (queued earlier, so first in the claim index).
    Index("ix_deliveries_reply_claim", "channel", "next_attempt_at", **_where(REPLY_QUEUED)),
)

# --- inbound ----------------------------------------------------------------------

inbound_events = Table(
    "inbound_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("channel", String(16), nullable=False),
    Column("external_id", Text, nullable=False),  # MessageSid, update_id, Message-ID+sender
    Column("sender", Text),  # None once processed for an unknown sender
    Column("body", Text),  # redacted (or None) once processed
    Column("payload", JSON),  # the provider's fields, minus the body once processed
    Column("received_at", UTCDateTime(), nullable=False),
    Column("status", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("processed_at", UTCDateTime()),
    UniqueConstraint("channel", "external_id"),
    CheckConstraint("status IN ('pending', 'processed', 'dead')", name="status"),
    Index("ix_inbound_events_status", "status", "id"),
)

# --- scheduling, access and audit ---------------------------------------------------

digest_runs = Table(
    "digest_runs",
    metadata,
    Column("unit_id", ForeignKey("units.id"), primary_key=True),
    Column("kind", String(16), primary_key=True),
    Column("day", Date, primary_key=True),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("sent_at", UTCDateTime()),
    Column("deliveries", Integer, nullable=False, default=0),
)

api_keys = Table(
    "api_keys",
    metadata,
    _id(),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("unit_ids", JSON, nullable=False),
    Column("read_only", Boolean, nullable=False, default=False),
    _created(),
    Column("revoked_at", UTCDateTime()),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", UTCDateTime(), nullable=False),
    Column("actor", Text, nullable=False),  # "cli", "roster", a staff or guardian id
    Column("action", String(64), nullable=False),
    Column("subject", Text),  # an id, never a body or an address
    Column("detail", JSON),
    Index("ix_audit_log_at", "at"),
)
