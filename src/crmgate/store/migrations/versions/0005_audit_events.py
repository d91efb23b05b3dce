"""audit events: an append-only, hash-chained log of security events

Revision ID: 0005_audit_events
Revises: 0004_oauth_flow_instance
Create Date: 2026-11-29
"""

from collections.abc import Sequence

revision: str = "0005_audit_events"
down_revision: str | None = "0004_oauth_flow_instance"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # the audit work fills this in


def downgrade() -> None:
    pass
