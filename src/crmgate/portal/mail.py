"""The portal's e-mail (invitations, password resets) through the operator's SMTP server,
sent from a worker thread so that a slow server does not hold the event loop. Without an SMTP
server the e-mail is only logged, without its body: its links are secrets."""

from __future__ import annotations

import asyncio
import logging
import smtplib
import ssl
from email.message import EmailMessage

from pydantic import SecretStr

log = logging.getLogger("crmgate.portal.mail")


class MailError(RuntimeError):
    pass


class Mailer:
    def __init__(
        self,
        host: str | None,
        port: int,
        *,
        sender: str,
        starttls: bool = True,
        username: str | None = None,
        password: SecretStr | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.host = host
        self.port = port
        self.sender = sender
        self.starttls = starttls
        self.username = username
        self._password = password
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Mailer(host={self.host!r}, port={self.port})"

    @property
    def configured(self) -> bool:
        return bool(self.host)

    async def send(self, to: str, subject: str, text: str) -> None:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message.set_content(text)
        if not self.host:
            log.warning("e-mail %r not sent: no smtp_host is set", subject)
            return
        try:
            await asyncio.to_thread(self._send, message)
        except (OSError, smtplib.SMTPException) as failure:
            log.error("e-mail %r not sent: %s", subject, type(failure).__name__)
            raise MailError("the e-mail could not be sent") from None

    def _send(self, message: EmailMessage) -> None:
        assert self.host is not None
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username and self._password is not None:
                smtp.login(self.username, self._password.get_secret_value())
            smtp.send_message(message)
