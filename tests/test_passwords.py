"""Which passwords labctl accepts (`labctl.passwords`)."""

from __future__ import annotations

import pytest

from labctl.errors import ValidationError
from labctl.passwords import check_password


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short", "at least 8 characters"),
        ("password", "too common"),
        ("Password1!", "too common"),
        ("123qwerty", "too common"),
        ("iloveyou", "too common"),
        ("12345678", "too common"),
        ("!!!!2024", "too common"),
        ("aaaaaaaa", "too simple"),
        ("abababab1", "too simple"),
        ("charlie-rocks", "username"),
        ("Xcb.brown99", "e-mail"),
        ("cb.brown@lab.org!", "e-mail"),
    ],
)
def test_weak_passwords_are_refused_with_one_line(password: str, why: str) -> None:
    with pytest.raises(ValidationError, match=why) as err:
        check_password(password, "charlie", "cb.brown@lab.org")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "password", ["correct horse battery", "s3cret-pass", "another-pass", "Tr0ub4dor&3x"]
)
def test_ordinary_passwords_are_accepted(password: str) -> None:
    assert check_password(password, "charlie", "cb.brown@lab.org") == password
