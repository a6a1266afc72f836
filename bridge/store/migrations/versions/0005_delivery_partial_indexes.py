"""delivery partial indexes

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 14:50:00.000000

The provider-id, lease and fallback indexes of `deliveries` hold only the rows that
have a value: a fan-out of new (queued) deliveries writes nothing to them.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

PARTIAL = (
    ('ix_deliveries_provider_id', ['provider_id'], 'provider_id'),
    ('ix_deliveries_lease', ['channel', 'status', 'lease_until'], 'lease_until'),
    ('ix_deliveries_fallback_of', ['fallback_of'], 'fallback_of'),
)


def upgrade() -> None:
    for name, columns, present in PARTIAL:
        op.drop_index(name, table_name='deliveries')
        where = sa.text(f'{present} IS NOT NULL')
        op.create_index(
            name, 'deliveries', columns, sqlite_where=where, postgresql_where=where
        )


def downgrade() -> None:
    for name, columns, _ in PARTIAL:
        op.drop_index(name, table_name='deliveries')
        op.create_index(name, 'deliveries', columns)
