"""Which passwords labctl accepts: long enough, hard to guess, not the member's own name.

How hard a password is to guess is zxcvbn's estimate (dictionaries of common passwords, names
and words, keyboard patterns, repeats, sequences, dates, l33t spellings): it must reach
`limits.PASSWORD_SCORE`. The password is judged as NFKC makes it (a full-width letter is the
letter itself), and may hold no control character (a NUL would cut it short in some tools).
"""

from __future__ import annotations

import unicodedata

from zxcvbn import zxcvbn

from labctl import limits
from labctl.errors import ValidationError

MIN_LENGTH = 8


def check_password(password: str, username: str = "", email: str = "") -> str:
    """`password` if labctl accepts it; else ValidationError, one line saying why."""
    if any(unicodedata.category(c) == "Cc" for c in password):
        raise ValidationError("the password must not hold control characters (such as NUL)")
    plain = unicodedata.normalize("NFKC", password)
    if len(plain) < MIN_LENGTH:
        raise ValidationError(f"the password must have at least {MIN_LENGTH} characters")
    lowered = plain.lower()
    names = {username.lower(), email.lower(), email.lower().partition("@")[0]}
    if any(len(name) >= 3 and name in lowered for name in names):
        raise ValidationError("the password must not contain the username or e-mail address")
    guess = zxcvbn(plain, user_inputs=[name for name in names if name])
    if guess["score"] < limits.PASSWORD_SCORE:
        warning = guess["feedback"]["warning"].rstrip(".")
        said = f" ({warning.lower()})" if warning else ""
        raise ValidationError(f"this password is too easy to guess{said}: choose another")
    return password
