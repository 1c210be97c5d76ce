"""Sending a message: by e-mail (smtplib, over STARTTLS or TLS) or to an incoming webhook (a JSON
`{"text": ...}` POST, as Mattermost and Slack take it, to a public address only: `webhook`), each
with a timeout."""

from __future__ import annotations

import smtplib
import socket
import ssl
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate
from functools import partial

from labctl.config.notifyconfig import NotifyConfig, Recipient, SmtpConfig
from labctl.notify.messages import Message
from labctl.notify.webhook import SUBJECT_PREFIX, DeliveryError, post_webhook


def email(smtp: SmtpConfig, to: str, message: Message) -> EmailMessage:
    """The e-mail of `message`; its Message-ID is the same on every attempt."""
    mail = EmailMessage()
    mail["From"] = smtp.from_address
    mail["To"] = to
    mail["Subject"] = SUBJECT_PREFIX + message.subject
    mail["Date"] = formatdate(localtime=True)
    mail["Message-ID"] = f"<labctl.{message.key}@{smtp.from_address.rpartition('@')[2]}>"
    mail["Auto-Submitted"] = "auto-generated"
    mail.set_content(message.body)
    return mail


def send_mail(smtp: SmtpConfig, to: str, message: Message) -> None:
    """Hand `message` to the lab's mail server for `to`; DeliveryError if it does not take it."""
    context = ssl.create_default_context(cafile=smtp.ca_file)
    where = f"SMTP {smtp.host}:{smtp.port}"
    try:
        if smtp.security == "tls":
            server: smtplib.SMTP = smtplib.SMTP_SSL(
                smtp.host, smtp.port, timeout=smtp.timeout_seconds, context=context
            )
        else:
            server = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout_seconds)
        with server:
            if smtp.security == "starttls":
                server.starttls(context=context)
            if smtp.user:
                server.login(smtp.user, smtp.password or "")
            server.send_message(email(smtp, to, message))
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else ""
        raise DeliveryError(f"{where}: {exc.smtp_code} {text}".strip()) from None
    except (smtplib.SMTPException, OSError) as exc:  # refused, timed out, TLS failed
        raise DeliveryError(f"{where}: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class Channel:
    """One way a message reaches the member: their e-mail, their webhook, the lab's."""

    name: str
    send: Callable[[Message], None]


def channels(settings: NotifyConfig, who: Recipient) -> list[Channel]:
    """The ways `who` is told: e-mail if they have an address and the lab an SMTP server,
    their own webhook, and the lab's."""
    found = []
    if settings.smtp is not None and who.email:
        found.append(Channel("email", partial(send_mail, settings.smtp, who.email)))
    timeout = settings.webhook_timeout_seconds
    for name, url in (("webhook", who.webhook), ("lab webhook", settings.webhook)):
        if url:
            found.append(Channel(name, partial(post_webhook, url, timeout=timeout)))
    return found


def send_test(settings: NotifyConfig, who: Recipient) -> list[tuple[str, str]]:
    """Send a test message through each of `who`'s channels now: each channel's name and what
    came of it ("" if it took the message)."""
    test = Message(
        "test message",
        f"A test from the labctl watchdog of {who.username} on {socket.gethostname()}: "
        "notifications reach you here.\n",
        f"test.{uuid.uuid4().hex}",
    )
    outcome = []
    for way in channels(settings, who):
        try:
            way.send(test)
            outcome.append((way.name, ""))
        except DeliveryError as exc:
            outcome.append((way.name, str(exc)))
    return outcome
