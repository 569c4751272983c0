"""`buddy tickets`: list, approve and deny the calls waiting for a person in a log."""

from __future__ import annotations

import json

import pytest

from buddy.engine import AuditLog, Engine, replay
from buddy.engine.app._cli import main

T0 = 1_700_000_000.0
EMAIL = "msgraph_send_email"


def run_cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def waiting(tmp_path):
    """A log with two tickets, made by an app that then stopped."""
    path = tmp_path / "audit.jsonl"
    clock = lambda: T0  # noqa: E731
    engine = Engine.default(clock=clock, audit=AuditLog.open(path, clock=clock))
    ids = [engine.prepare("a", EMAIL, {"to": to}, confidence=0.9, wait=True,
                          expires_in=None).ticket.id for to in ("x", "y")]
    engine.audit.close()
    return path, ids


def test_list_approve_deny_and_the_app_resumes(waiting, capsys):
    path, (first, second) = waiting
    code, out, _ = run_cli(capsys, "tickets", "list", "--audit", path, "--json")
    assert code == 0 and [t["id"] for t in json.loads(out)] == [first, second]
    code, out, _ = run_cli(capsys, "tickets", "approve", first, "--audit", path,
                           "--by", "alice", "--args", '{"to": "bob"}')
    assert code == 0 and "approved by alice with edited arguments" in out
    code, out, _ = run_cli(capsys, "tickets", "deny", second, "--audit", path, "--by", "bob",
                           "--reason", "no")
    assert code == 0 and "denied by bob" in out
    code, out, _ = run_cli(capsys, "tickets", "list", "--audit", path, "--json")
    assert json.loads(out) == []
    clock = lambda: T0  # noqa: E731
    app = Engine.default(clock=clock, audit=AuditLog.open(path, clock=clock))
    sent = []
    app.register_handler(EMAIL, live=lambda args: sent.append(args) or "sent")
    assert app.resume(first).ok and not app.resume(second).ok
    app.audit.close()
    assert sent == [{"to": "bob"}] and replay(path).ok


@pytest.mark.parametrize(("argv", "code", "error"), [
    (["approve", "ticket-999", "--by", "a"], 1, "TicketError: no ticket 'ticket-999'"),
    (["approve", "{first}", "--by", "a", "--args", "[1]"], 2, "must be a JSON object"),
    (["approve", "{first}", "--by", "a", "--args", "{nope"], 2, "not JSON"),
    (["approve", "{first}", "--by", ""], 1, "must be printable text"),
    (["deny", "{first}"], 2, "Missing option '--by'"),
])
def test_bad_input_is_one_line_and_writes_nothing(waiting, capsys, argv, code, error):
    path, (first, _) = waiting
    before = path.read_bytes()
    got, out, err = run_cli(capsys, "tickets", *[a.replace("{first}", first) for a in argv],
                            "--audit", path)
    assert got == code and error in err and len(err.strip().splitlines()) == 1
    assert path.read_bytes() == before


def test_a_log_that_is_not_there(tmp_path, capsys):
    code, _, err = run_cli(capsys, "tickets", "list", "--audit", tmp_path / "none.jsonl")
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "none.jsonl").exists()


def test_a_huge_integer_in_edited_arguments_is_refused_not_rounded(waiting, capsys):
    path, (first, _) = waiting
    code, _, err = run_cli(capsys, "tickets", "approve", first, "--audit", path, "--by", "a",
                           "--args", '{"to": 123456789012345678901234567890}')
    assert code == 1 and "integer beyond 64 bits" in err


def test_the_list_shows_the_arguments_masked(waiting, capsys, tmp_path):
    path, _ = waiting
    code, out, _ = run_cli(capsys, "tickets", "list", "--audit", path)
    assert code == 0 and '{"to":"x"}' in out
