"""No password of a configured URL reaches any CLI output, log line or error message (issue 14, point 5).

Property-based: hypothesis generates passwords (with ``/ # ? @ : % ; & =`` and friends) and puts them
into the database and broker URLs in each form a driver accepts: percent-encoded userinfo, raw
userinfo (SQLAlchemy reads ``/ # ?`` inside a password; urllib-based parsers choke on them and quote
the piece they took for a port), and a ``?password=`` query parameter (redis-py reads it). The real
commands then run against unreachable ports, so they fail fast, and everything they wrote (stdout,
stderr, exceptions, log records of every logger at DEBUG) is searched for the password, its encoded
forms, and every piece of it of 6 characters or more.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import string
import tempfile
import traceback
from unittest import mock
from urllib.parse import quote, quote_plus

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from embedclf import checks
from embedclf.cli import cli

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

PW_CHARS = string.ascii_letters + string.digits + "/#?@:%;&=+!$'()*,[]~-._ "
#: a raw password in userinfo cannot hold "@" (it ends the userinfo for SQLAlchemy) nor "%" (decoded)
RAW_UNSAFE = "@%"
DEAD_PG = "127.0.0.1:1"     # nothing listens on port 1: connection refused at once
DEAD_REDIS = "127.0.0.1:1"

passwords = st.text(alphabet=PW_CHARS, min_size=8, max_size=24).filter(lambda p: len(set(p)) >= 4)
forms = st.sampled_from(["encoded", "raw", "query"])


def urls(password: str, form: str) -> tuple[str, str]:
    if form == "encoded":
        pw = quote(password, safe="")
        return (f"postgresql+psycopg2://app:{pw}@{DEAD_PG}/embedclf_x", f"redis://:{pw}@{DEAD_REDIS}/0")
    if form == "raw":
        return (f"postgresql+psycopg2://app:{password}@{DEAD_PG}/embedclf_x", f"redis://:{password}@{DEAD_REDIS}/0")
    pw = quote(password, safe="")
    return (f"postgresql+psycopg2://app@{DEAD_PG}/embedclf_x?password={pw}", f"redis://{DEAD_REDIS}/0?password={pw}")


def leaked(password: str, text: str) -> list[str]:
    """Forms of ``password`` (whole, encoded, or a piece of >= 6 characters) found in ``text``."""
    needles = {password, quote(password, safe=""), quote_plus(password), quote(password)}
    needles |= {p for p in re.split(r"[/?#@:;&=,\[\]\s%+]+", password) if len(p) >= 6}
    return sorted(n for n in needles if n and n in text)


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.lines.append(logging.Formatter("%(name)s %(message)s").format(record))
        except Exception as exc:  # noqa: BLE001 - a record that cannot format still counts
            self.lines.append(f"{record.name} {record.msg!r} {record.args!r} {exc}")


@contextlib.contextmanager
def all_logs():
    handler, root = Capture(), logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


def run_everything(db_url: str, broker_url: str, texts_file: str) -> list[tuple[str, str]]:
    """(command, everything it wrote) for each command that reads the URLs."""
    env = {"EMBEDCLF_DATABASE_URL": db_url, "EMBEDCLF_BROKER_URL": broker_url, "EMBEDCLF_ENQUEUE_RETRY_S": "0",
           "EMBEDCLF_EMBEDDER": "fake:8"}
    commands = [
        ["health", "--timeout", "0.5"], ["health", "--json", "--timeout", "0.5"],
        ["health", "--live", "--timeout", "0.5"], ["health", "--ready", "--json", "--timeout", "0.5"],
        ["db", "upgrade", "--create"], ["db", "current"], ["db", "roles"],
        ["enqueue", "--head", "h", "--file", texts_file, "--quiet"], ["-v", "results"],
    ]
    out = []
    for args in commands:
        with all_logs() as logs:
            r = CliRunner().invoke(cli, args, env=env)
        exc = "".join(traceback.format_exception(r.exception)) if r.exception else ""
        out.append((" ".join(args), "\n".join([r.stdout, r.stderr, r.output, exc, *logs])))
    stdout, stderr = io.StringIO(), io.StringIO()
    with all_logs() as logs, mock.patch.dict(os.environ, env), contextlib.redirect_stdout(stdout), \
            contextlib.redirect_stderr(stderr):
        code = checks.main(["services"])
    out.append(("checks services", "\n".join([stdout.getvalue(), stderr.getvalue(), str(code), *logs])))
    return out


@pytest.fixture(scope="module")
def texts_file():
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("hello\n")
    yield f.name
    os.unlink(f.name)


@hsettings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(password=passwords, form=forms)
def test_no_cli_output_log_or_error_shows_the_password(password, form, texts_file):
    if form == "raw":
        assume(not any(c in password for c in RAW_UNSAFE))
    db_url, broker_url = urls(password, form)
    for command, text in run_everything(db_url, broker_url, texts_file):
        assert not leaked(password, text), (command, form, leaked(password, text), text[-3000:])


@pytest.mark.parametrize("password", ["sl/ash-secret-1", "ha#sh-secret-2", "qu?ery-secret-3"])
def test_known_leaks_stay_closed(password, texts_file):
    """The forms the issue reported (raw / # ? in userinfo, ?password=), each through every command."""
    for form in ("raw", "query"):
        db_url, broker_url = urls(password, form)
        for command, text in run_everything(db_url, broker_url, texts_file):
            assert not leaked(password, text), (command, form, text[-3000:])
