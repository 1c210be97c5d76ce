"""Posting to a webhook, and only to a public address: the host is looked up, every address it
has must be public (`notifyconfig.address_kind`), and the connection goes to an address that was
checked, not to one looked up again (a name's DNS may change in between). A redirect is not
followed: it is a failure, as any other answer but 2xx. A failure says what happened in a few
words, never the connection's own error text (which would tell which internal ports are open)."""

from __future__ import annotations

import http.client
import ipaddress
import json
import socket
import ssl

from labctl.config.notifyconfig import (
    IpAddress,
    WebhookUrl,
    check_webhook,
    parse_webhook,
    refuse_internal,
    shown_url,
)
from labctl.errors import LabctlError, ValidationError
from labctl.notify.messages import Message

SUBJECT_PREFIX = "[labctl] "


class DeliveryError(LabctlError):
    """A message could not be handed over (server down, refused, timed out); it is retried."""


def public_addresses(hook: WebhookUrl) -> list[IpAddress]:
    """The addresses `hook`'s host has (none if it is not found), each checked to be public;
    ValidationError if one is not."""
    try:
        found = socket.getaddrinfo(hook.host, hook.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in found))
    for ip in addresses:
        refuse_internal(ip, hook.host)
    return addresses


def checked_webhook(url: str) -> str:
    """`url` if a member may set it as their webhook: `check_webhook`'s rules, and its host, if
    it is found now, has public addresses only; ValidationError naming it otherwise."""
    check_webhook(url)
    try:
        public_addresses(parse_webhook(url))
    except ValidationError as exc:
        raise ValidationError(f"webhook {shown_url(url)!r}: {exc}") from None
    return url


class _Pinned(http.client.HTTPConnection):
    """Connects to the first of `addresses` that answers, whatever the host resolves to now."""

    addresses: tuple[IpAddress, ...] = ()

    def connect(self) -> None:
        error: OSError = ConnectionError("no address")
        for ip in self.addresses:
            try:
                self.sock = socket.create_connection((str(ip), self.port), self.timeout)
                return
            except OSError as exc:
                error = exc
        raise error


class _PinnedTLS(http.client.HTTPSConnection, _Pinned):
    """The same over TLS: the certificate is checked against the host's name."""


def _reason(exc: Exception) -> str:
    """What went wrong, in a few words that tell nothing about the network behind."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLError):
        return "TLS failed (certificate or handshake)"
    if isinstance(exc, http.client.HTTPException):
        return "not an HTTP answer"
    return "could not connect"


def post_webhook(url: str, message: Message, timeout: float) -> None:
    """POST `{"text": ...}` to an incoming webhook at a public address; DeliveryError unless it
    answers 2xx. The `Idempotency-Key` header is the same on every attempt."""
    where = f"webhook {shown_url(url)}"
    try:
        hook = parse_webhook(url)
        addresses = public_addresses(hook)
    except ValidationError as exc:
        raise DeliveryError(f"{where}: {exc}") from None
    if not addresses:
        raise DeliveryError(f"{where}: host not found")
    text = f"{SUBJECT_PREFIX}{message.subject}\n\n{message.body}"  # plain: Slack and Mattermost
    kind = _PinnedTLS if hook.scheme == "https" else _Pinned
    connection = kind(hook.host, hook.port, timeout=timeout)
    connection.addresses = tuple(addresses)
    headers = {"Content-Type": "application/json", "Idempotency-Key": f"labctl.{message.key}"}
    try:
        connection.request("POST", hook.target, json.dumps({"text": text}).encode(), headers)
        answer = connection.getresponse()
        answer.read(1024)
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"{where}: {_reason(exc)}") from None
    finally:
        connection.close()
    if 300 <= answer.status < 400:
        raise DeliveryError(f"{where}: HTTP {answer.status}, a redirect: not followed")
    if not 200 <= answer.status < 300:
        raise DeliveryError(f"{where}: HTTP {answer.status}")
