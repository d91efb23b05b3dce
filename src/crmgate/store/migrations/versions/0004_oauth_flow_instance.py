"""oauth flows name the account's instance (platforms whose authorization is per instance)

Revision ID: 0004_oauth_flow_instance
Revises: 0003_oauth_flows
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_oauth_flow_instance"
down_revision: str | None = "0003_oauth_flows"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("oauth_flows") as batch:
        batch.add_column(sa.Column("instance_url", sa.String(length=300), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("oauth_flows") as batch:
        batch.drop_column("instance_url")
