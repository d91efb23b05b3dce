"""restricted keys: a key's scope (applications, entities and actions), expiry and addresses

Revision ID: 0006_restricted_keys
Revises: 0005_audit_events
Create Date: 2026-11-29
"""

from collections.abc import Sequence

revision: str = "0006_restricted_keys"
down_revision: str | None = "0005_audit_events"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    pass  # the restricted keys work fills this in


def downgrade() -> None:
    pass
