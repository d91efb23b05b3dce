"""The portal's long-lived objects, and the gateway services its pages use."""

from __future__ import annotations

from dataclasses import dataclass

from crmgate.applications import ApplicationService
from crmgate.audit import AuditLog
from crmgate.limits import RateLimits
from crmgate.oauth import OAuthFlows
from crmgate.portal.app_health import ApplicationHealth
from crmgate.portal.chain import ChainCheck
from crmgate.portal.connect_links import ConnectLinks
from crmgate.portal.invitations import Invitations
from crmgate.portal.logins import Logins
from crmgate.portal.mail import Mailer
from crmgate.portal.passkeys import Passkeys
from crmgate.portal.passwords import Passwords
from crmgate.portal.resets import PasswordResets
from crmgate.portal.sessions import Sessions
from crmgate.portal.throttle import SignInThrottle
from crmgate.security.vault import Vault
from crmgate.settings import Settings
from crmgate.store.accounts import AccountStore
from crmgate.store.db import SessionFactory
from crmgate.store.restricted_keys import RestrictedKeyStore
from crmgate.store.usage_report import UsageReport


@dataclass
class Portal:
    settings: Settings
    accounts: AccountStore
    restricted_keys: RestrictedKeyStore
    applications: ApplicationService
    oauth: OAuthFlows
    audit: AuditLog
    limits: RateLimits
    logins: Logins
    sessions: Sessions
    passkeys: Passkeys
    passwords: Passwords
    throttle: SignInThrottle
    mailer: Mailer
    invitations: Invitations
    resets: PasswordResets
    usage: UsageReport
    chain: ChainCheck  # the audit chain's verification state (the Audit trail page)
    connect_links: ConnectLinks
    app_health: ApplicationHealth

    @classmethod
    def build(
        cls,
        settings: Settings,
        db: SessionFactory,
        vault: Vault,
        pepper: bytes,
        *,
        accounts: AccountStore,
        restricted_keys: RestrictedKeyStore,
        applications: ApplicationService,
        oauth: OAuthFlows,
        audit: AuditLog,
        limits: RateLimits,
    ) -> Portal:
        sessions = Sessions(
            db, vault, settings.portal_session_idle, settings.portal_session_absolute
        )
        connect_links = ConnectLinks(db, audit, oauth.public_url)
        oauth.portal_hooks.append(connect_links.on_connected)  # a link's flow uses it up
        return cls(
            settings=settings,
            accounts=accounts,
            restricted_keys=restricted_keys,
            applications=applications,
            oauth=oauth,
            audit=audit,
            limits=limits,
            logins=Logins(db, accounts, vault, pepper),
            sessions=sessions,
            passkeys=Passkeys(db, sessions),
            passwords=Passwords(
                settings.portal_argon2_time_cost,
                settings.portal_argon2_memory_kib,
                settings.portal_argon2_parallelism,
            ),
            throttle=SignInThrottle(
                limits,
                settings.portal_sign_in_limit_account,
                settings.portal_sign_in_limit_address,
            ),
            mailer=Mailer(
                settings.smtp_host,
                settings.smtp_port,
                sender=settings.mail_from,
                starttls=settings.smtp_starttls,
                username=settings.smtp_username,
                password=settings.smtp_password,
            ),
            invitations=Invitations(db),
            resets=PasswordResets(db),
            usage=UsageReport(db),
            chain=ChainCheck(),
            connect_links=connect_links,
            app_health=ApplicationHealth(db),
        )
