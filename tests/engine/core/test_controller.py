"""The controller's audit trail, pinned: a seeded scenario's log, byte for byte.

:func:`scenario` runs every way a call can go through ``Engine.execute``,
sessions and :class:`PendingCall` on a fixed clock (MOCK, DRY_RUN and LIVE
runs; approvals by the caller, a callback, a grant and an edit; denials; a LIVE
failure that rolls back a session, with an undo that fails; handlers that
raise, time out or are interrupted; a lock and an unlock mid-session; a call
cancelled; mode caps; missing handlers; a revoked grant; results and arguments
that cannot be encoded; refusals). ``data/execute_golden.jsonl`` is its audit
log as the controller wrote it when it fired ``transitions`` triggers, and
``data/execute_golden_results.jsonl`` what each call returned; the controller
must reproduce both exactly, however it drives the machine.

Regenerate (only for a deliberate change of the trail, and say so in the commit)::

    python -m tests.engine.core.test_controller --write
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from buddy.engine import Approval, AuditLog, Engine, ExecutionMode
from buddy.engine.core._chain import verify_lines
from buddy.engine.core._controller import ExecutionResult, _Context
from buddy.engine.core._replay import replay
from buddy.rules.base.errors import InputError
from tests.helpers import ManualClock

DATA = Path(__file__).parent / "data"
GOLDEN = DATA / "execute_golden.jsonl"
GOLDEN_RESULTS = DATA / "execute_golden_results.jsonl"

M, D, L = ExecutionMode.MOCK, ExecutionMode.DRY_RUN, ExecutionMode.LIVE
AGENTS = {
    "agent-1": {"ui.write", "documents.read", "mail.read", "mail.send", "mail.write",
                "files.write", "db.write", "vision.read", "crm.write"},
    "agent-2": {"ui.write", "documents.read", "mail.read", "mail.send"},
    "reader": {"documents.read"},
}


class Unencodable:
    """A result no JSON encoder knows: the log records it as unencodable."""

    def __repr__(self) -> str:
        return "<Unencodable>"


class Approver:
    """A scripted approval callback: each request takes the next answer.

    An answer is an :class:`Approval`, a bool, None (no answer), an exception to
    raise, or a callable run first (to lock the engine, say) whose return is
    the answer.
    """

    def __init__(self) -> None:
        self.answers: list[Any] = []
        self.asked: list[str] = []

    def __call__(self, request: Any) -> Any:
        self.asked.append(f"{request.agent}:{request.tool}")
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        if callable(answer) and not isinstance(answer, Approval):
            answer = answer()
        return answer


def _row(step: str, r: ExecutionResult) -> dict[str, Any]:
    return {"step": step, "context": r.context, "agent": r.agent, "tool": r.tool,
            "decision": [r.decision.mode.value, r.decision.allowed, r.decision.rule,
                         r.decision.reason, r.decision.state.value],
            "mode": r.mode.value if r.mode else None, "state": r.state.value, "ok": r.ok,
            "result": repr(r.result), "error": r.error,
            "args": repr(dict(r.args)) if r.args is not None else None,
            "rolled_back": list(r.rolled_back), "timed_out": r.timed_out}


def scenario(open_audit: Callable[[ManualClock], AuditLog] | None = None,
             ) -> tuple[Engine, list[dict[str, Any]]]:
    """Run the pinned scenario; return the engine and one row per call's result.

    ``open_audit(clock)`` makes its log (default: a memory log).
    """
    clock = ManualClock(1_700_000_000.0)
    approver = Approver()
    audit = open_audit(clock) if open_audit is not None else AuditLog.memory(clock=clock)
    engine = Engine.default(clock=clock, approver=approver, agents=AGENTS, audit=audit)
    rows: list[dict[str, Any]] = []
    undone: list[str] = []

    def record(step: str, result: ExecutionResult) -> ExecutionResult:
        rows.append(_row(step, result))
        clock.advance(0.25)
        return result

    def raises(exc: BaseException) -> Callable[[dict[str, Any]], Any]:
        def handler(args: dict[str, Any]) -> Any:
            raise exc
        return handler

    def undo(name: str, fail: bool = False) -> Callable[[dict[str, Any], Any], Any]:
        def handler(args: dict[str, Any], result: Any) -> Any:
            undone.append(name)
            if fail:
                raise RuntimeError(f"cannot undo {name}")
            return {"undone": name, "args": args}
        return handler

    engine.register_handler("text_extract", mock=lambda a: {"mock": a},
                            dry_run=lambda a: {"dry": a}, live=lambda a: {"text": "hello", **a},
                            undo=undo("text_extract"))
    engine.register_handler("form_fill", dry_run=lambda a: {"preview": a},
                            live=lambda a: {"filled": sorted(a)}, undo=undo("form_fill"))
    engine.register_handler("msgraph_create_draft", dry_run=lambda a: {"draft": "preview"},
                            live=lambda a: {"draft": "d-1"}, undo=undo("draft", fail=True))
    engine.register_handler("msgraph_send_email", dry_run=lambda a: {"would_send": a},
                            live=lambda a: {"sent": True, "to": a.get("to")})
    engine.register_handler("file_operation", dry_run=lambda a: {"would_write": a},
                            live=raises(OSError("disk full")))
    engine.register_handler("database_write", dry_run=lambda a: {"rows": 0},
                            live=lambda a: {"rows": 1})
    engine.register_handler("vision_inspect", live=lambda a: {"seen": Unencodable()},
                            dry_run=lambda a: {"big": 2 ** 70})
    engine.register_handler("screenshot_capture", live=lambda a: {"text": "lone \udc80"})
    engine.register_handler("button_click", mock=raises(ValueError("mock broke")),
                            dry_run=raises(TimeoutError("slow button")),
                            live=lambda a: {"clicked": True})
    # ghl_create_contact: no handler at all (the simulated MOCK); math_compute: MOCK only.
    engine.register_handler("math_compute", mock=lambda a: {"sum": sum(a.get("xs", []))})

    ex = engine.execute
    # -- one call per mode, decided by the table ------------------------------
    record("mock", ex("agent-1", "text_extract", {"doc": "a"}, confidence=0.3))
    record("dry_run", ex("agent-1", "text_extract", {"doc": "b"}, confidence=0.6))
    record("live", ex("agent-1", "text_extract", {"doc": "c"}, confidence=0.9))
    record("live_medium", ex("agent-1", "form_fill", {"field": "x"}, confidence=0.85))
    record("mock_default_handler", ex("agent-1", "ghl_create_contact", {"n": 1},
                                      confidence=0.2))
    record("dry_run_no_handler", ex("agent-1", "ghl_create_contact", {"n": 2},
                                    confidence=0.7))
    record("live_no_handler", ex("agent-1", "math_compute", {"xs": [1, 2]}, confidence=0.99))
    # -- approvals -------------------------------------------------------------
    record("approved_by_caller", ex("agent-1", "msgraph_send_email", {"to": "a@x"},
                                    confidence=0.9, approval=True))
    record("denied_by_caller", ex("agent-1", "msgraph_send_email", {"to": "b@x"},
                                  confidence=0.9, approval=False))
    approver.answers.append(Approval.approve("looks fine"))
    record("approved_by_callback", ex("agent-1", "msgraph_send_email", {"to": "c@x"},
                                      confidence=0.95))
    approver.answers.append(Approval.deny("not today"))
    record("denied_by_callback", ex("agent-1", "msgraph_send_email", {"to": "d@x"},
                                    confidence=0.95))
    approver.answers.append(True)
    record("approved_by_bool", ex("agent-1", "database_write", {"q": "insert"},
                                  confidence=0.9))
    approver.answers.append(None)
    record("no_answer", ex("agent-1", "database_write", {"q": "update"}, confidence=0.9))
    approver.answers.append(RuntimeError("approver down"))
    record("approver_fails", ex("agent-1", "database_write", {"q": "delete"},
                                confidence=0.9))
    approver.answers.append(Approval.edit({"to": "safe@x", "password": "hunter2"}, "edited"))
    record("approved_with_edit", ex("agent-1", "msgraph_send_email",
                                    {"to": "all@x", "password": "hunter2"}, confidence=0.9))
    grant = engine.grant("agent-1", "database_write", calls=1, reason="maintenance")
    record("approved_by_grant", ex("agent-1", "database_write", {"q": "g"}, confidence=0.9))
    grant2 = engine.grant("agent-1", "database_write", seconds=60, reason="window")
    pending = engine.prepare("agent-1", "database_write", {"q": "r"}, confidence=0.9)
    engine.revoke(grant2, "changed my mind")
    record("grant_revoked_before_run", pending.run())
    engine.grant("agent-1", "database_write", seconds=1, reason="short")
    pending = engine.prepare("agent-1", "database_write", {"q": "e"}, confidence=0.9)
    clock.advance(5)
    record("grant_expired_before_run", pending.run())
    assert grant.id != grant2.id
    # -- caps ------------------------------------------------------------------
    record("capped_dry_run", ex("agent-1", "text_extract", {"doc": "d"}, confidence=0.9,
                                max_mode=D, cap_reason="dry-run-only run"))
    record("capped_mock", ex("agent-1", "text_extract", {"doc": "e"}, confidence=0.9,
                             max_mode=M))
    record("capped_approved", ex("agent-1", "msgraph_send_email", {"to": "e@x"},
                                 confidence=0.9, approval=True, max_mode=D,
                                 cap_reason="conflict resolution: DOWNGRADE"))
    record("capped_waiting", ex("agent-1", "database_write", {"q": "w"}, confidence=0.9,
                                max_mode=M))  # nobody is asked: the cap rules LIVE out
    record("cap_above_decision", ex("agent-1", "text_extract", {"doc": "f"}, confidence=0.6,
                                    max_mode=L))
    # -- handlers that fail ----------------------------------------------------
    record("mock_raises", ex("agent-1", "button_click", {"b": 1}, confidence=0.1))
    record("dry_run_times_out", ex("agent-1", "button_click", {"b": 2}, confidence=0.7))
    record("unencodable_result", ex("agent-1", "vision_inspect", {"img": 1}, confidence=0.9))
    record("big_int_result", ex("agent-1", "vision_inspect", {"img": 2}, confidence=0.6))
    record("surrogate_result", ex("agent-1", "screenshot_capture", {}, confidence=0.9))
    record("unencodable_args", ex("agent-1", "text_extract", {"obj": Unencodable()},
                                  confidence=0.3))
    # -- a session: LIVE failure rolls back its reversible calls ---------------
    with engine.session("agent-1") as session:
        record("s1_text", session.execute("text_extract", {"doc": "s1"}, confidence=0.9))
        record("s1_form", session.execute("form_fill", {"f": "s1"}, confidence=0.9))
        record("s1_draft", session.execute("msgraph_create_draft", {"d": "s1"},
                                           confidence=0.9))
        record("s1_dry", session.execute("form_fill", {"f": "dry"}, confidence=0.7))
        record("s1_send", session.execute("msgraph_send_email", {"to": "s1@x"},
                                          confidence=0.9, approval=True))
        assert session.rollback_stack == ["text_extract", "form_fill", "msgraph_create_draft"]
        record("s1_fail", session.execute("file_operation", {"path": "/tmp/x"},
                                          confidence=0.9, approval=True))
        assert session.rollback_stack == []
        record("s1_after", session.execute("form_fill", {"f": "after"}, confidence=0.9))
        record("s1_other_agent", session.execute("text_extract", {"doc": "other"},
                                                 confidence=0.9, agent="agent-2"))
        record("s1_live_fail_medium", session.execute(
            "button_click", {"b": 3}, confidence=0.9))  # LIVE ok: not reversible
    try:
        session.execute("text_extract", {}, confidence=0.9)
    except InputError:
        pass
    # A LIVE handler that raises in a session with nothing to undo.
    with engine.session("agent-1") as session:
        record("s2_fail_alone", session.execute("file_operation", {"path": "/tmp/y"},
                                                confidence=0.9, approval=True))
    # -- the lock, mid-session -------------------------------------------------
    with engine.session("agent-1") as session:
        record("s3_live", session.execute("form_fill", {"f": "s3"}, confidence=0.9))
        pending = session.prepare("form_fill", {"f": "later"}, confidence=0.9)
        engine.lock("incident 7")
        record("s3_locked_before_run", pending.run())
        record("s3_while_locked", session.execute("form_fill", {"f": "locked"},
                                                  confidence=0.9))
        record("s3_while_locked_high", session.execute("msgraph_send_email", {"to": "l@x"},
                                                       confidence=0.9, approval=True))
        engine.unlock("resolved")
        record("s3_after_unlock", session.execute("form_fill", {"f": "unlocked"},
                                                  confidence=0.9))
        approver.answers.append(lambda: (engine.lock("locked while asking"), True)[1])
        record("s3_locked_while_deciding", session.execute("database_write", {"q": "l"},
                                                           confidence=0.9))
        engine.unlock("again")
        approver.answers.append(lambda: engine.lock("locked, no answer"))
        record("s3_locked_while_waiting", session.execute("database_write", {"q": "n"},
                                                          confidence=0.9))
        engine.unlock("and again")
        pending = session.prepare("text_extract", {"doc": "dry"}, confidence=0.6)
        engine.lock("dry run goes on")
        record("s3_dry_run_after_lock", pending.run())
        engine.unlock()
    # -- pending calls ---------------------------------------------------------
    pending = engine.prepare("agent-1", "form_fill", {"f": "cancel"}, confidence=0.9)
    record("cancelled", pending.cancel("operator said no"))
    record("cancelled_again", pending.cancel("twice"))
    record("run_after_cancel", pending.run())
    pending = engine.prepare("agent-1", "text_extract", {"doc": "c2"}, confidence=0.6)
    record("cancelled_default_reason", pending.cancel())
    approver.answers.append(None)
    pending = engine.prepare("agent-1", "database_write", {"q": "wait"}, confidence=0.9)
    record("cancelled_waiting", pending.cancel("withdrawn"))
    pending = engine.prepare("agent-1", "text_extract", {"doc": "twice"}, confidence=0.9)
    record("run_once", pending.run())
    record("run_twice", pending.run())
    approver.answers.append(Approval.deny("no"))
    pending = engine.prepare("agent-1", "msgraph_send_email", {"to": "p@x"}, confidence=0.9)
    record("prepared_denied", pending.run())
    # -- an interrupt goes up, recorded ---------------------------------------
    engine.register_handler("math_compute", mock=raises(KeyboardInterrupt()))
    pending = engine.prepare("agent-1", "math_compute", {"xs": [3]}, confidence=0.1)
    try:
        pending.run()
    except KeyboardInterrupt:
        pass
    try:
        pending.run()
    except InputError:
        pass
    # -- refusals --------------------------------------------------------------
    record("unknown_tool", ex("agent-1", "no_such_tool", {}, confidence=0.9))
    record("bad_args", ex("agent-1", "text_extract", ["not", "a", "mapping"],  # type: ignore[arg-type]
                          confidence=0.9))
    record("bad_confidence", ex("agent-1", "text_extract", {}, confidence=1.5))
    record("bad_approval", ex("agent-1", "text_extract", {}, confidence=0.9,
                              approval=1))  # type: ignore[arg-type]
    record("unknown_agent", ex("stranger", "text_extract", {}, confidence=0.9))
    record("missing_permission", ex("reader", "form_fill", {}, confidence=0.9))
    record("engine_id_agent", ex("ctx-5", "text_extract", {}, confidence=0.9))
    try:
        ex("agent-1", "text_extract", {}, confidence=0.9, max_mode="LIVE")  # type: ignore[arg-type]
    except InputError:
        pass
    # -- the rate limit --------------------------------------------------------
    for i in range(32):  # msgraph_send_email allows 30 a minute; the clock stands still
        rows.append(_row(f"rate_{i}", ex("agent-2", "msgraph_send_email", {"i": i},
                                         confidence=0.9, approval=True)))
    assert approver.answers == []
    return engine, rows


def _named_without_json(ctx: _Context, seq: int) -> str:
    ctx.id = f"ctx-{seq}"
    return ctx.id


def _results_lines(rows: list[dict[str, Any]]) -> list[str]:
    return [json.dumps(r, sort_keys=True) for r in rows]


class TestGoldenAuditTrail:
    """The controller's trail and results for the scenario, exactly as pinned."""

    def test_the_log_is_byte_identical(self):
        engine, _ = scenario()
        assert b"\n".join(engine.audit.raw_lines()) + b"\n" == GOLDEN.read_bytes()

    def test_the_results_are_identical(self):
        _, rows = scenario()
        assert "\n".join(_results_lines(rows)) + "\n" == GOLDEN_RESULTS.read_text()

    def test_the_pinned_log_verifies_and_replays(self):
        lines = GOLDEN.read_text().splitlines()
        assert verify_lines(lines).last_seq == len(lines)
        report = replay(lines)
        assert report.ok, report

    def test_a_file_log_writes_the_same_events(self, tmp_path):
        engine, _ = scenario(lambda clock: AuditLog.open(tmp_path / "audit.jsonl", clock=clock))
        engine.audit.close()
        assert (tmp_path / "audit.jsonl").read_bytes() == GOLDEN.read_bytes()

    def test_the_dict_path_writes_the_same_bytes(self, monkeypatch):
        # Contexts that never learn their id's JSON: the controller then writes every
        # transition and execution event through the dict encoder, not its own.
        monkeypatch.setattr(_Context, "_name", _named_without_json)
        engine, _ = scenario()
        assert b"\n".join(engine.audit.raw_lines()) + b"\n" == GOLDEN.read_bytes()

    def test_odd_values_get_the_dict_paths_bytes(self, monkeypatch):
        def deep(levels: int) -> Any:
            value: Any = 1
            for _ in range(levels):
                value = [value]
            return value

        calls: list[tuple[str, Any, ExecutionMode | None, str]] = [
            ("form_fill", {"n": 2 ** 70}, None, ""),
            ("form_fill", {"token": "s", (1, 2): "tuple key", "xs": [{"password": "p"}]}, None,
             ""),
            *(("form_fill", {"deep": deep(n)}, None, "") for n in range(250, 256)),
            ("form_fill", {"n": 1}, M, "cap \ud800 with a lone surrogate"),
            ("form_fill", {"a\ud800": 1}, D, "ok"),
        ]

        def run() -> list[bytes]:
            clock = ManualClock(1_700_000_000.0)
            engine = Engine.default(clock=clock, audit=AuditLog.memory(clock=clock, keep=None))
            engine.register_handler("form_fill", mock=lambda a: {"r": a}, dry_run=lambda a: a,
                                    live=lambda a: [Unencodable(), a])
            for tool, args, cap, why in calls:
                engine.execute("agent-1", tool, args, confidence=0.9, max_mode=cap,
                               cap_reason=why)
            return engine.audit.raw_lines()

        encoded = run()
        monkeypatch.setattr(_Context, "_name", _named_without_json)
        assert encoded == run()

    def test_the_scenario_covers_every_kind_and_move(self):
        records = [json.loads(line) for line in GOLDEN.read_text().splitlines()]
        kinds = {r["kind"] for r in records}
        assert {"decision", "transition", "execution", "rollback", "approval", "grant",
                "revoke", "lock", "unlock"} <= kinds
        moves = {(r["event"], r["src"], r["dst"]) for r in records if r["kind"] == "transition"}
        assert moves == set(_declared_moves())


def _declared_moves() -> Iterator[tuple[str, str, str]]:
    """Every declared escalation edge the controller takes, but two: ``unlock`` it
    never fires, and ``lock`` from DRY_RUN needs another writer to lock the log
    between the decision's walk and its record (a thread, or a process sharing
    the file), which a sequential scenario cannot do."""
    from buddy.machines.escalation import SPEC

    for t in SPEC.transitions:
        for s in t.source:
            if t.trigger == "unlock" or (t.trigger, s.name) == ("lock", "DRY_RUN"):
                continue
            yield t.trigger, s.name, t.dest.name


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    DATA.mkdir(exist_ok=True)
    engine, rows = scenario()
    GOLDEN.write_bytes(b"\n".join(engine.audit.raw_lines()) + b"\n")
    GOLDEN_RESULTS.write_text("\n".join(_results_lines(rows)) + "\n")
    print(f"wrote {GOLDEN} ({engine.audit.last_seq} events) and {GOLDEN_RESULTS}")
