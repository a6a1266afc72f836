"""reply claim index

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28 16:30:00.000000

Queued replies to parents (confirmations, answers, staff replies) get a partial index of
their own, so the outbox claims them before an urgent announcement's thousands of
deliveries that were queued earlier.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

WHERE = sa.text("status = 'queued' AND kind = 'reply'")


def upgrade() -> None:
    op.create_index(
        'ix_deliveries_reply_claim', 'deliveries', ['channel', 'next_attempt_at'],
        sqlite_where=WHERE, postgresql_where=WHERE,
    )


def downgrade() -> None:
    op.drop_index('ix_deliveries_reply_claim', table_name='deliveries')
