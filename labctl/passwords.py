"""Which passwords labctl accepts: long enough, not a common one, not the member's own name.

The list holds the most common passwords of the public leak lists and the words they are made
of; a password is refused when it is one of them, or one of them with digits and symbols around
it (`Password1!`, `123qwerty`), or only digits and symbols, or of fewer than four different
characters, or holds the username or e-mail address.
"""

from __future__ import annotations

from labctl.errors import ValidationError

MIN_LENGTH = 8

_WORDS = """
password passwort passw0rd p@ssword p@ssw0rd pass admin administrator root toor guest
login welcome letmein changeme default secret master test tester user
qwerty qwertz azerty qwertyuiop asdf asdfgh asdfghjkl zxcvbn zxcvbnm qazwsx qwe qweasd
abc abcd abcdef abcdefg abcdefgh abcdefghi iloveyou loveyou love lovely
monkey dragon shadow sunshine princess football baseball soccer hockey batman superman
michael jessica charlie jordan thomas daniel hunter ranger buster tigger
trustno1 whatever freedom starwars pokemon computer internet samsung google
mustang killer cookie cheese flower summer winter spring autumn hello hallo
zaq1zaq1 1q2w3e4r 1q2w3e4r5t 1qaz2wsx q1w2e3r4 a1b2c3d4
lab labctl laboratory science neuro neuroscience research experiment microscope
"""
COMMON = frozenset(_WORDS.split())
_AROUND = "0123456789!@#$%^&*()_+-=.,;:?'\"/\\|<>[]{}~` "


def check_password(password: str, username: str = "", email: str = "") -> str:
    """`password` if labctl accepts it; else ValidationError, one line saying why."""
    if len(password) < MIN_LENGTH:
        raise ValidationError(f"the password must have at least {MIN_LENGTH} characters")
    lowered = password.lower()
    core = lowered.strip(_AROUND)
    if not core or lowered in COMMON or core in COMMON or len(set(lowered)) < 4:
        raise ValidationError("this password is too common or too simple: choose another")
    names = {username.lower(), email.lower(), email.lower().partition("@")[0]}
    if any(len(name) >= 3 and name in lowered for name in names):
        raise ValidationError("the password must not contain the username or e-mail address")
    return password
