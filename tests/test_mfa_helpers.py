"""tests/mfa.py without the testbed: the one-time password arithmetic and the pty driver."""

import sys

import pytest

from tests.mfa import PtyTimeout, hotp, run_on_pty, totp


def test_hotp_and_totp_match_the_rfc_test_vectors() -> None:
    seed = b"12345678901234567890".hex()
    assert [hotp(seed, n) for n in range(3)] == ["755224", "287082", "359152"]  # RFC 4226
    assert totp(seed, at=59, digits=8) == "94287082"  # RFC 6238 (SHA-1)
    assert totp(seed, at=59) == "287082"


ASK = "import getpass; a = getpass.getpass('Password: '); b = input('Code: '); print(a, b)"


def test_the_pty_driver_answers_prompts_in_order_on_the_controlling_terminal() -> None:
    done = run_on_pty([sys.executable, "-c", ASK], [("Password: $", "pw"), ("Code: $", "123")])
    assert done.returncode == 0 and done.answered == 2
    assert done.transcript.endswith("pw 123\r\n"), done


def test_the_pty_driver_fails_clearly_on_a_missing_prompt() -> None:
    with pytest.raises(PtyTimeout, match=r"(?s)no 'Token: \$' after 1 s:.*Password:"):
        run_on_pty([sys.executable, "-c", ASK], [("Token: $", "x")], timeout=1)
    with pytest.raises(AssertionError, match="ended before prompt"):
        run_on_pty([sys.executable, "-c", "print('bye')"], [("Password: $", "x")])
    done = run_on_pty([sys.executable, "-c", "raise SystemExit(3)"])
    assert done.returncode == 3
