"""restricted keys: a key's scope (applications, entities and actions), expiry and addresses

Revision ID: 0006_restricted_keys
Revises: 0005_audit_events
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_restricted_keys"
down_revision: str | None = "0005_audit_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("scope", sa.Text(), nullable=True))
        batch.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("description", sa.String(length=200), nullable=True))


def downgrade() -> None:
    # a restricted key without its scope would be a full key: remove them
    op.execute("DELETE FROM api_keys WHERE kind = 'cgr'")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("description")
        batch.drop_column("expires_at")
        batch.drop_column("scope")
