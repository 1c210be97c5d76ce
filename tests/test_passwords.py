"""Which passwords labctl accepts (`labctl.passwords`)."""

from __future__ import annotations

import pytest

from labctl.errors import ValidationError
from labctl.passwords import check_password


def wide(text: str) -> str:
    """`text` in full-width letters and digits, as some keyboards type them."""
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@pytest.mark.parametrize(
    ("password", "why"),
    [
        ("short", "at least 8 characters"),
        ("password", "too easy to guess"),
        ("Password1!", "too easy to guess"),
        ("123qwerty", "too easy to guess"),
        ("iloveyou", "too easy to guess"),
        ("12345678", "too easy to guess"),
        ("!!!!2024", "too easy to guess"),
        ("aaaaaaaa", "too easy to guess"),
        ("abababab1", "too easy to guess"),
        ("passwordpassword", "too easy to guess"),  # passed the hand list
        ("zaq12wsx", "too easy to guess"),
        (wide("password123"), "too easy to guess"),  # full-width: read as password123
        (wide("abcdefgh"), "too easy to guess"),
        (wide("short"), "at least 8 characters"),
        ("qwertyuiop", "too easy to guess"),
        ("1q2w3e4r5t", "too easy to guess"),
        ("s3cret-pass", "too easy to guess"),
        ("correct horse\0battery", "control characters"),
        ("correct horse battery\n", "control characters"),
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
    "password",
    ["correct horse battery", "Tr0ub4dor&3x", "good old horse", wide("correct horse battery")],
)
def test_ordinary_passwords_are_accepted(password: str) -> None:
    assert check_password(password, "charlie", "cb.brown@lab.org") == password
