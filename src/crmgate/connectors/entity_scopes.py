"""OAuth scopes per unified entity (RFC 6749 §3.3) for incremental authorization, as Google runs
it (draft-ietf-oauth-incremental-authz; ``include_granted_scopes``): the scopes a flow asks for
the entities it names, what the token answers granted, and the scope an entity's calls lack.

The descriptor's ``oauth.entity_scopes`` says which; a platform without it, or an application
whose token answers named no scope (RFC 6749 §5.1: then the scopes asked), is never refused
here: the CRM's own 403 stays the answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from crmgate.connectors.catalogue import OAuthEndpoints, Platform
from crmgate.connectors.errors import NotAllowed

GRANTED = "scope"  # the credential's derived value holding the last token answer's `scope`


def chosen(oauth: OAuthEndpoints, names: str) -> tuple[str, ...]:
    """The entities a flow's ``entities`` names (comma-separated), each one the descriptor
    names scopes for; ValueError saying which it knows otherwise."""
    known = oauth.entity_scopes
    if not known:
        raise ValueError("the platform's scopes are not per entity: name none")
    picked = tuple(dict.fromkeys(name.strip() for name in names.split(",") if name.strip()))
    unknown = [name for name in picked if name not in known]
    if unknown or not picked:
        said = ", ".join(unknown)[:200] or "none named"
        raise ValueError(f"{said}: not one of {', '.join(known)}")
    return picked


def asked(
    oauth: OAuthEndpoints, configured: Sequence[str] | None, entities: Sequence[str] = ()
) -> tuple[str, ...]:
    """The scopes a flow asks: the operator's (``configured``), else the descriptor's and every
    entity's; naming ``entities``, those of no entity and the named entities' only."""
    per_entity = {scope for scopes in oauth.entity_scopes.values() for scope in scopes}
    every = configured or (*oauth.scopes, *(s for v in oauth.entity_scopes.values() for s in v))
    if entities:
        named = (scope for entity in entities for scope in oauth.entity_scopes[entity])
        every = (*(scope for scope in every if scope not in per_entity), *named)
    return tuple(dict.fromkeys(every))


def kept(derived: Mapping[str, str]) -> dict[str, str]:
    """What of a token answer's derived values stays with the application: its scope."""
    return {GRANTED: derived[GRANTED]} if GRANTED in derived else {}


def granted(derived: Mapping[str, str]) -> frozenset[str] | None:
    """The scopes the application's last token answer granted; None where it named none."""
    said = derived.get(GRANTED)
    return None if said is None else frozenset(said.replace(",", " ").split())


def check(
    platform: Platform, have: frozenset[str] | None, entity: str = "", name: str = ""
) -> None:
    """Raise NotAllowed where the calls on ``entity`` (or on the CRM's object ``name``, as the
    entities it serves) need a scope the application was not granted."""
    oauth = platform.oauth
    if oauth is None or not oauth.entity_scopes or have is None:
        return
    if not entity:
        serving = (e for e, mapped in platform.entities.items() if mapped.object == name)
        entity = next((e for e in serving if e in oauth.entity_scopes), "")
    needed = oauth.entity_scopes.get(entity, ())
    if needed and needed[0] not in have:
        raise NotAllowed(
            f"{platform.name} did not grant this application the scope {needed[0]}, which "
            f"{entity} records need: authorize it again with entities={entity} (the scopes "
            "granted before are kept)"
        )
