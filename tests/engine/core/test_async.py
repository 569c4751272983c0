"""The async engine: adecide, aexecute, asession, aprepare; async approvers, handlers and
undos awaited; one audit chain with sync callers; and the confidence a call does not give."""

from __future__ import annotations

import asyncio

import pytest

from buddy.engine import Approval, AsyncSession, Engine, replay
from buddy.rules.base._values import ExecutionMode
from buddy.rules.base.errors import InputError, UnknownToolError

T0 = 1_700_000_000.0


def _engine(**kwargs) -> Engine:
    return Engine.default(clock=lambda: T0, **kwargs)


def run(coro):
    return asyncio.run(coro)


class TestAsyncExecute:
    def test_async_handlers_are_awaited_and_sync_ones_called(self):
        engine = _engine()
        seen = []

        async def live(args):
            await asyncio.sleep(0)
            seen.append(("live", args))
            return {"found": args["q"]}

        engine.register_handler("memory_search", live=live)
        engine.register_handler("goal_query", live=lambda args: seen.append("sync") or [1])
        first = run(engine.aexecute("a", "memory_search", {"q": "x"}, confidence=0.99))
        second = run(engine.aexecute("a", "goal_query", {}, confidence=0.99))
        assert first.ok and first.mode is ExecutionMode.LIVE and first.result == {"found": "x"}
        assert second.ok and second.result == [1]
        assert seen == [("live", {"q": "x"}), "sync"]
        assert replay(engine.audit).ok

    def test_an_async_approver_is_awaited_and_its_edit_runs(self):
        async def approver(request):
            await asyncio.sleep(0)
            return Approval.edit({"to": "bob"}, "checked")

        engine = _engine(approver=approver)
        sent = []

        async def send(args):
            sent.append(args)
            return "sent"

        engine.register_handler("msgraph_send_email", live=send)
        result = run(engine.aexecute("a", "msgraph_send_email", {"to": "all"}, confidence=0.9))
        assert result.ok and result.mode is ExecutionMode.LIVE and sent == [{"to": "bob"}]
        edits = [r for r in engine.audit.records() if r["event"] == "edit_args"]
        assert edits[0]["data"]["original"] == {"to": "all"}
        assert replay(engine.audit).ok

    def test_a_sync_call_with_an_async_approver_is_denied_and_no_coroutine_is_left(self):
        async def approver(request):
            return True

        engine = _engine(approver=approver)
        engine.register_handler("msgraph_send_email", live=lambda args: "sent")
        result = engine.execute("a", "msgraph_send_email", {}, confidence=0.9)
        assert not result.ok and result.decision.rule == "approval.denied"
        # the denial says why (filterwarnings=error: an unawaited coroutine would fail)
        reasons = [r["data"].get("why") for r in engine.audit.records()
                   if r["event"] == "approval_denied"]
        assert any("async" in (why or "") for why in reasons)

    def test_adecide_awaits_the_approver(self):
        asked = []

        async def approver(request):
            asked.append(request.tool)
            return Approval.approve()

        engine = _engine(approver=approver)
        decision = run(engine.adecide("a", "msgraph_send_email", 0.9))
        assert decision.mode is ExecutionMode.LIVE and asked == ["msgraph_send_email"]
        assert run(engine.adecide("a", "nope", 0.9)).rule == "tool.unknown"
        assert replay(engine.audit).ok

    def test_a_failing_async_live_run_rolls_back_with_async_undos(self):
        engine = _engine()
        undone = []

        async def fill(args):
            return args["field"]

        async def undo(args, result):
            undone.append(result)

        async def boom(args):
            raise RuntimeError("disk full")

        engine.register_handler("form_fill", live=fill, undo=undo)
        engine.register_handler("text_extract", live=boom)

        async def scenario():
            async with engine.asession("a") as session:
                assert isinstance(session, AsyncSession)
                ok = await session.execute("form_fill", {"field": "name"}, confidence=0.9)
                bad = await session.execute("text_extract", {}, confidence=0.9)
                return ok, bad

        ok, bad = run(scenario())
        assert ok.ok and not bad.ok and bad.rolled_back == (ok.context,)
        assert isinstance(bad.exception, RuntimeError) and undone == ["name"]
        assert replay(engine.audit).ok

    def test_a_cancelled_run_is_recorded_and_raised_on(self):
        engine = _engine()
        started = asyncio.Event()

        async def slow(args):
            started.set()
            await asyncio.sleep(60)

        engine.register_handler("memory_search", live=slow)

        async def scenario():
            task = asyncio.create_task(engine.aexecute("a", "memory_search", {},
                                                       confidence=0.99))
            await started.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        run(scenario())
        [failed] = [r for r in engine.audit.records() if r["kind"] == "execution"]
        assert failed["data"]["ok"] is False and "CancelledError" in failed["data"]["error"]
        assert replay(engine.audit).ok

    def test_sync_and_async_callers_share_one_chain(self):
        engine = _engine()

        async def live(args):
            return "ok"

        engine.register_handler("memory_search", live=live)

        async def many():
            return await asyncio.gather(*(engine.aexecute(f"a{i}", "memory_search", {"i": i},
                                                          confidence=0.99)
                                          for i in range(20)))

        results = run(many())
        engine.execute("b", "goal_query", {}, confidence=0.99)
        assert all(r.ok for r in results)
        assert len({r.context for r in results}) == 20
        assert replay(engine.audit).ok

    def test_aprepare_then_arun(self):
        engine = _engine()

        async def live(args):
            return "done"

        engine.register_handler("memory_search", live=live)

        async def scenario():
            pending = await engine.aprepare("a", "memory_search", {}, confidence=0.99)
            return await pending.arun(), await pending.arun()

        first, again = run(scenario())
        assert first.ok and first.result == "done" and again is first


class TestConfidenceNotGiven:
    def test_without_a_default_the_call_is_refused_saying_why(self):
        engine = _engine()
        decision = engine.decide("a", "form_fill")
        assert not decision.allowed and decision.rule == "input.confidence"
        assert "no confidence given" in decision.reason
        result = engine.execute("a", "form_fill", {})
        assert not result.ok and "no confidence given" in result.error
        assert replay(engine.audit).ok

    def test_the_engine_default_and_where_it_came_from(self):
        engine = _engine(default_confidence=0.9)
        assert engine.decide("a", "form_fill").mode is ExecutionMode.LIVE
        [decision] = [r for r in engine.audit.records() if r["kind"] == "decision"]
        assert decision["data"]["confidence"] == 0.9
        assert decision["data"]["confidence_from"] == "default"
        assert engine.decide("a", "form_fill", 0.5).mode is ExecutionMode.MOCK  # given wins
        assert "confidence_from" not in list(engine.audit.records())[-1]["data"]
        assert replay(engine.audit).ok

    def test_per_tool_defaults(self):
        engine = _engine(default_confidence={"form_fill": 0.7, "*": 0.95})
        assert engine.decide("a", "form_fill").mode is ExecutionMode.DRY_RUN
        assert engine.decide("a", "goal_query").mode is ExecutionMode.LIVE
        sources = [r["data"]["confidence_from"] for r in engine.audit.records()
                   if r["kind"] == "decision"]
        assert sources == ["tool_default", "default"]
        assert engine.default_confidence == {"form_fill": 0.7, "*": 0.95}

    def test_the_provider_is_asked_first_with_the_call(self):
        asked = []

        def provider(agent, tool, args):
            asked.append((agent, tool, args))
            return None if tool == "goal_query" else 0.99

        engine = _engine(default_confidence=0.6, confidence_provider=provider)
        result = engine.execute("a", "form_fill", {"field": "x"})
        # decided LIVE on the provider's 0.99; no handlers, so it ran the MOCK simulator
        assert result.decision.mode is ExecutionMode.LIVE and result.mode is ExecutionMode.MOCK
        assert engine.decide("a", "goal_query").mode is ExecutionMode.DRY_RUN  # the default
        assert asked == [("a", "form_fill", {"field": "x"}), ("a", "goal_query", None)]
        sources = [r["data"].get("confidence_from") for r in engine.audit.records()
                   if r["kind"] == "decision"]
        assert sources == ["provider", "default"]
        assert replay(engine.audit).ok

    @pytest.mark.parametrize("provider", [
        lambda agent, tool, args: 1 / 0,
        lambda agent, tool, args: float("nan"),
        lambda agent, tool, args: "0.9",
        lambda agent, tool, args: True,
        lambda agent, tool, args: 10 ** 400,
    ], ids=["raises", "nan", "text", "bool", "huge"])
    def test_a_provider_that_fails_or_answers_nonsense_refuses(self, provider):
        engine = _engine(default_confidence=0.99, confidence_provider=provider)
        decision = engine.decide("a", "form_fill")
        assert not decision.allowed and decision.rule == "input.confidence"
        assert not engine.execute("a", "form_fill", {}).ok
        assert replay(engine.audit).ok

    def test_an_async_provider_refuses_and_is_closed(self):
        async def provider(agent, tool, args):
            return 0.9

        engine = _engine(confidence_provider=provider)
        decision = engine.decide("a", "form_fill")
        assert not decision.allowed and "async" in decision.reason

    def test_an_unknown_tool_is_refused_as_such_not_for_its_confidence(self):
        engine = _engine(confidence_provider=lambda agent, tool, args: 1 / 0)
        assert engine.decide("a", "nope").rule == "tool.unknown"

    @pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), "0.9", True, {"*": 2}])
    def test_bad_defaults_are_refused_at_once(self, value):
        with pytest.raises(InputError):
            _engine(default_confidence=value)

    def test_a_default_for_an_unknown_tool_is_refused(self):
        with pytest.raises(UnknownToolError):
            _engine(default_confidence={"nope": 0.9})

    def test_a_provider_must_be_callable(self):
        with pytest.raises(InputError):
            _engine(confidence_provider=0.9)

    def test_async_calls_take_the_default_too(self):
        engine = _engine(default_confidence=0.99)
        engine.register_handler("memory_search", live=lambda args: "x")
        result = run(engine.aexecute("a", "memory_search", {}))
        assert result.ok and result.mode is ExecutionMode.LIVE
        assert run(engine.adecide("a", "memory_search")).mode is ExecutionMode.LIVE


class TestWorkMadeNotDone:
    """A handler's result that is work made and not done is refused (it did not run)."""

    def test_a_sync_call_refuses_an_async_generator_handler(self):
        engine = _engine()

        async def live(args):
            yield "row"

        engine.register_handler("memory_search", live=live)
        result = engine.execute("a", "memory_search", {}, confidence=0.99)
        assert not result.ok and "did not run" in result.error

    def test_a_generator_result_is_refused(self):
        engine = _engine()

        def live(args):
            yield "row"

        engine.register_handler("memory_search", live=live)
        result = engine.execute("a", "memory_search", {}, confidence=0.99)
        assert not result.ok and "generator" in result.error
        assert not run(engine.aexecute("a", "memory_search", {}, confidence=0.99)).ok

    def test_an_async_handler_that_forgot_to_await_is_refused(self):
        engine = _engine()

        async def inner():
            return "x"

        async def live(args):
            return inner()  # a forgotten await

        engine.register_handler("memory_search", live=live)
        result = run(engine.aexecute("a", "memory_search", {}, confidence=0.99))
        assert not result.ok and "forgotten await" in result.error
        assert replay(engine.audit).ok
