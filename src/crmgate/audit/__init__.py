"""The audit trail: an append-only, keyed hash chain of security events, none of them lost.

Every event (a key created, an application deleted, an authentication that failed, ...) is one
row of ``audit_events``, numbered 1, 2, 3, ... (``seq``). Each row stores
``hash = HMAC-SHA256(audit key, previous row's hash + canonical JSON of this event)``, the first
one chained to ``GENESIS``, and the chain head (the last seq and hash) lives in the one row of
``audit_head``. Editing an event changes its hash; deleting one leaves a gap and a broken link;
deleting the last ones disagrees with the head. ``verify()`` (``crmgate audit verify``) walks the
chain and names the first broken event.

No event is lost to a crash between a change and its event: callers that change the database
pass their session to ``record``, so the event commits or rolls back with the change.
No secret ever goes into an event: details hold ids, key hints, names of fields, counts.

A file per concept: ``keys`` (the audit key file), ``anchor`` (the highest head this host
wrote, outside the database), ``context`` (who, where, which request), ``chain`` (events,
their hashes, appending and verifying), ``queue`` (noisy events: folded, capped, flushed),
``queries`` (listing, counting, filtering) and ``log`` (``AuditLog``, which ties them). Callers
import from here.
"""

from crmgate.audit.anchor import (
    ANCHOR_FILE,
    ANCHOR_INTERVAL,
    AuditAnchor,
    Witness,
    anchor_file_path,
)
from crmgate.audit.chain import (
    APPLICATION_CREATED,
    APPLICATION_DELETED,
    APPLICATION_UPDATED,
    AUDIT_DROPPED,
    AUTH_FAILED,
    GENESIS,
    HEAD_ID,
    KEY_CREATED,
    KEY_REVOKED,
    KEY_ROTATED,
    LIMIT_EXCEEDED,
    MAX_TEXT,
    NOISY,
    OAUTH_CONNECTED,
    OAUTH_FAILED,
    REAUTHORIZATION_NEEDED,
    TOKEN_REFRESHED,
    USER_CREATED,
    USER_DELETED,
    USER_UPDATED,
    Detail,
    Event,
    Verification,
    chain_hash,
)
from crmgate.audit.context import RequestContext, bind_cli, bind_request, current
from crmgate.audit.keys import (
    KEY_FILE,
    KEY_FILE_HEADER,
    KEYED_FROM,
    AuditKeyError,
    AuditKeys,
    key_file_path,
    key_id,
)
from crmgate.audit.log import AuditLog
from crmgate.audit.queries import FIELDS
from crmgate.audit.queue import CAP_WINDOW, FOLD_CLIENTS

__all__ = [
    "ANCHOR_FILE",
    "ANCHOR_INTERVAL",
    "APPLICATION_CREATED",
    "APPLICATION_DELETED",
    "APPLICATION_UPDATED",
    "AUDIT_DROPPED",
    "AUTH_FAILED",
    "CAP_WINDOW",
    "FIELDS",
    "FOLD_CLIENTS",
    "GENESIS",
    "HEAD_ID",
    "KEYED_FROM",
    "KEY_CREATED",
    "KEY_FILE",
    "KEY_FILE_HEADER",
    "KEY_REVOKED",
    "KEY_ROTATED",
    "LIMIT_EXCEEDED",
    "MAX_TEXT",
    "NOISY",
    "OAUTH_CONNECTED",
    "OAUTH_FAILED",
    "REAUTHORIZATION_NEEDED",
    "TOKEN_REFRESHED",
    "USER_CREATED",
    "USER_DELETED",
    "USER_UPDATED",
    "AuditAnchor",
    "AuditKeyError",
    "AuditKeys",
    "AuditLog",
    "Detail",
    "Event",
    "RequestContext",
    "Verification",
    "Witness",
    "anchor_file_path",
    "bind_cli",
    "bind_request",
    "chain_hash",
    "current",
    "key_file_path",
    "key_id",
]
