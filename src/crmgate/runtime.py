"""The long-lived objects of one gateway process, built once from the settings."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from crmgate.applications import ApplicationService
from crmgate.audit import AuditLog
from crmgate.cache import WarmCache
from crmgate.connectors import REGISTRY
from crmgate.connectors.catalogue import Catalogue
from crmgate.entities import EntityService
from crmgate.limits import RateLimits
from crmgate.oauth import OAuthFlows
from crmgate.outbound import Outbound, Retrying
from crmgate.portal.service import Portal
from crmgate.security import secretfile
from crmgate.security.authn import Authenticator
from crmgate.security.keys import KeyHasher
from crmgate.security.vault import Vault
from crmgate.settings import Settings
from crmgate.store import migrate
from crmgate.store.accounts import AccountStore
from crmgate.store.applications import ApplicationStore
from crmgate.store.db import create_engine, redact_url, session_factory
from crmgate.store.restricted_keys import RestrictedKeyStore
from crmgate.store.usage import UsageRecorder
from crmgate.tokens import TokenManager

PEPPER_FILE = "key_pepper"


class SchemaOutOfDate(RuntimeError):
    pass


def key_pepper(settings: Settings) -> bytes:
    if settings.key_pepper is not None:
        pepper = settings.key_pepper.get_secret_value().encode()
        if len(pepper) < 32:
            raise ValueError("CRMGATE_KEY_PEPPER must be at least 32 characters long")
        return pepper
    return secretfile.load_or_create(settings.data_dir, PEPPER_FILE)


def key_hasher(settings: Settings) -> KeyHasher:
    return KeyHasher(key_pepper(settings))


def vault(settings: Settings) -> Vault:
    keys = settings.vault_keys.get_secret_value() if settings.vault_keys else None
    return Vault.from_settings(settings.data_dir, keys)


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    accounts: AccountStore
    authenticator: Authenticator
    usage: UsageRecorder
    vault: Vault
    outbound: Outbound
    applications: ApplicationService
    entities: EntityService
    oauth: OAuthFlows
    limits: RateLimits
    audit: AuditLog
    restricted_keys: RestrictedKeyStore
    cache: WarmCache
    portal: Portal

    @classmethod
    def build(cls, settings: Settings) -> Services:
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = create_engine(settings.resolved_database_url)
        sessions = session_factory(engine)
        audit = AuditLog.from_settings(sessions, settings)
        # one cache per process for the warm path (keys, applications, their credentials)
        cache = WarmCache(
            sessions, settings.cache_ttl, settings.cache_size, settings.cache_poll_interval
        )
        accounts = AccountStore(sessions, key_hasher(settings), audit, cache)
        the_vault = vault(settings)
        outbound = Outbound(
            ca_file=settings.outbound_ca_file,
            timeout=settings.outbound_timeout,
            allowed_networks=settings.outbound_allowed_networks,
            plain_http_hosts=settings.outbound_plain_http_hosts,
            retrying=Retrying(settings.outbound_retries, settings.outbound_retry_budget),
        )
        catalogue = Catalogue.load(REGISTRY, settings.platform_overrides)
        # One connector object per platform type: Salesforce and SalesforceSandbox share the
        # connector code but not their descriptors (login hosts, overrides).
        connectors = {
            platform.type: REGISTRY[platform.connector](platform, outbound)
            for platform in catalogue.listed()
            if platform.connector is not None
        }
        applications = ApplicationService(
            catalogue,
            connectors,
            ApplicationStore(sessions, the_vault, cache),
            settings.max_applications,
            audit,
        )
        flows = OAuthFlows(
            sessions,
            the_vault,
            accounts,
            applications,
            settings.oauth_clients,
            settings.resolved_public_url,
            audit,
        )
        tokens = TokenManager(applications.store, settings.oauth_clients, audit, flows.callback_url)
        limits = RateLimits.from_settings(settings)
        restricted_keys = RestrictedKeyStore(sessions, key_hasher(settings), audit, cache)
        portal = Portal.build(
            settings,
            sessions,
            the_vault,
            key_pepper(settings),
            accounts=accounts,
            restricted_keys=restricted_keys,
            applications=applications,
            oauth=flows,
            audit=audit,
            limits=limits,
        )
        return cls(
            settings=settings,
            engine=engine,
            accounts=accounts,
            authenticator=Authenticator(accounts, settings.key_last_used_resolution, audit),
            usage=UsageRecorder(sessions),
            vault=the_vault,
            outbound=outbound,
            applications=applications,
            entities=EntityService(applications, tokens),
            oauth=flows,
            limits=limits,
            audit=audit,
            restricted_keys=restricted_keys,
            cache=cache,
            portal=portal,
        )

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls, settings: Settings, *, check_schema: bool = True
    ) -> AsyncIterator[Services]:
        """Services for the length of a block; closed (counters flushed, pool emptied) after it."""
        services = cls.build(settings)
        try:
            if check_schema:
                await services.check_schema()
                await services.audit.check_keys()  # no start without the audit keys it needs
            yield services
        finally:
            await services.close()

    async def check_schema(self) -> None:
        current = await migrate.current_revision(self.engine)
        head = migrate.head_revision()
        if current != head:
            raise SchemaOutOfDate(
                f"the database {redact_url(self.settings.resolved_database_url)} is at schema "
                f"revision {current or '(empty)'}, this crmgate needs {head}: run `crmgate migrate`"
            )

    async def close(self) -> None:
        await self.usage.flush()
        await self.cache.close()
        await self.audit.close()  # the queued noisy events
        await self.outbound.close()
        await self.limits.close()
        await self.engine.dispose()
