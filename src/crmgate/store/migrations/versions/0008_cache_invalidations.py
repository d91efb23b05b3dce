"""cache invalidations: the changes every gateway process's in-memory cache must drop

A log of subjects (a user, an application) written in the transaction of each change that makes
a cached copy wrong, and a one-row head whose lock gives each entry its number in commit order;
every process polls the log (crmgate/cache.py).

Revision ID: 0008_cache_invalidations
Revises: 0007_audit_keyed
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_cache_invalidations"
down_revision: str | None = "0007_audit_keyed"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "cache_invalidations",
        sa.Column("seq", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("subject", sa.String(length=120), nullable=False),
        sa.PrimaryKeyConstraint("seq", name=op.f("pk_cache_invalidations")),
    )
    head = op.create_table(
        "cache_invalidation_head",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cache_invalidation_head")),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0}])


def downgrade() -> None:
    op.drop_table("cache_invalidation_head")
    op.drop_table("cache_invalidations")
