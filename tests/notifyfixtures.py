"""A real SMTP server (aiosmtpd) and a real HTTP receiver (http.server), each on a free port."""

from __future__ import annotations

import email
import email.message
import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from labctl import limits


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Mailbox:
    """What the SMTP server received: each message with its envelope recipients."""

    delay: float = 0.0  # seconds before the server answers DATA
    mails: list[tuple[list[str], email.message.Message]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        time.sleep(self.delay)  # blocks the server's loop: a slow server, as seen by clients
        self.mails.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content)))
        return "250 OK"

    def authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password == b"s3cret-smtp"
        if ok:
            self.logins.append(data.login.decode())
        return AuthResult(success=ok)

    def subjects(self) -> list[str]:
        return [str(mail["Subject"]) for _, mail in self.mails]

    def body(self, index: int = 0) -> str:
        payload = self.mails[index][1].get_payload(decode=True)
        assert isinstance(payload, bytes)
        return payload.decode().replace("\r\n", "\n")


@contextmanager
def smtp_server(port: int | None = None, **options: Any) -> Iterator[tuple[Mailbox, int]]:
    box = Mailbox()
    port = port or free_port()
    controller = Controller(
        box, hostname="127.0.0.1", port=port, authenticator=box.authenticate, **options
    )
    controller.start()
    try:
        yield box, port
    finally:
        controller.stop()


@dataclass
class Receiver:
    """What the webhook receiver got; it answers each POST with the next of `statuses`."""

    statuses: list[int] = field(default_factory=list)
    posts: list[tuple[dict[str, Any], dict[str, str]]] = field(default_factory=list)
    url: str = ""


@contextmanager
def loopback_webhooks() -> Iterator[None]:
    """Webhooks may reach 127.0.0.1, where the tests' receivers listen, until this ends."""
    with mock.patch.object(limits, "WEBHOOK_NETWORKS", ("127.0.0.1/32",)):
        yield


@contextmanager
def http_receiver() -> Iterator[Receiver]:
    """A receiver on 127.0.0.1, which webhooks may reach while it runs."""
    got = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            status = got.statuses.pop(0) if got.statuses else 200
            if status == 200:
                got.posts.append((json.loads(body), dict(self.headers)))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    got.url = f"http://127.0.0.1:{server.server_port}/hooks/s3cret-token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with loopback_webhooks():
            yield got
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never says a word (an SMTP server that hangs)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with openssl."""
    import subprocess

    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1"),
            *("-addext", "subjectAltName=IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
