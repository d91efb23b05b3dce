"""audit keyed: each audit event records the id of the audit key that chained it

Events written before (``key_id`` NULL) keep verifying with plain SHA-256; every event written
after is chained with HMAC-SHA256 under a key kept outside the database (crmgate/audit.py).
A plain ADD COLUMN on both backends: SQLite's batch mode would copy the table and lose its
append-only triggers.

Revision ID: 0007_audit_keyed
Revises: 0006_restricted_keys
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_audit_keyed"
down_revision: str | None = "0006_restricted_keys"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("audit_events", sa.Column("key_id", sa.String(length=32), nullable=True))


def downgrade() -> None:
    # Keyed events no longer verify once their key id is gone: a downgrade gives up the
    # chain's check from the first keyed event on (their rows and hashes stay).
    op.drop_column("audit_events", "key_id")
