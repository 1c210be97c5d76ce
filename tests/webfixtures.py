"""The web app over a test database: a typed schema, three members, and logging in."""

from __future__ import annotations

import functools
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from argon2 import PasswordHasher
from starlette.testclient import TestClient

from labctl.config import Config, DataSchema, FieldSpec
from labctl.db import Database
from labctl.users import add_user
from labctl.web import server_config
from tests.jobfixtures import dataset_with_files, job_config
from tests.mongoserver import free_port

MEMBERS = {"alice": "member", "bob": "member", "root": "admin"}
SCHEMA = DataSchema(
    fields={
        "user": FieldSpec(type="str", required=True, help="lab member who acquired the data"),
        "data_raw_path": FieldSpec(type="path", required=True, help="where the raw data lie"),
        "runclass.id": FieldSpec(type="str", help="experiment class, e.g. ARB-diff"),
        "n_planes": FieldSpec(type="int", help="imaging planes"),
        "session_date": FieldSpec(type="date"),
        "data_complete": FieldSpec(type="bool", help="true once all raw files have been copied"),
    }
)
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def password(username: str) -> str:
    return f"pw-{username}-secret"


@functools.cache
def cheap_hash(secret: str) -> str:
    """A real argon2 hash at low cost: verifying reads the cost from the hash, so logins in tests
    take milliseconds instead of a third of a second."""
    return PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1).hash(secret)


def web_config(config: Config, tmp_path: Path) -> Config:
    """The test config with the local cluster, the pipelines' job types and a typed schema."""
    return job_config(config, tmp_path / "scratch").model_copy(update={"data": SCHEMA})


def seed(db: Database, config: Config, tmp_path: Path) -> None:
    """The members, and the dataset of the job fixtures (with real files) logged by alice."""
    for username, role in MEMBERS.items():
        add_user(db, username, role=role)
        db.users.update(
            {"username": username}, {"$set": {"password_hash": cheap_hash(password(username))}}
        )
    dataset_with_files(db, config.model_copy(update={"user": "alice"}), tmp_path / "data")


def csrf_token(client: TestClient, path: str = "/login") -> str:
    """The CSRF token of the form on `path` (the login form's, or the session's)."""
    found = _CSRF.search(client.get(path).text)
    assert found, f"no CSRF token on {path}"
    return found[1]


def login(client: TestClient, username: str, secret: str | None = None) -> int:
    """Log in through the form; return the status (303 when it worked)."""
    form = {
        "username": username,
        "password": secret if secret is not None else password(username),
        "csrf_token": csrf_token(client),
        "next": "/browse",
    }
    return client.post("/login", data=form, follow_redirects=False).status_code


@contextmanager
def served(config: Config) -> Iterator[str]:
    """The app served by uvicorn on a free port in a thread, for a real browser or HTTP client."""
    port = free_port()
    server = uvicorn.Server(server_config(config, "127.0.0.1", port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
