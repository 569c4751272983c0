"""Three ways embedding buddy failed silently (issue 11), each now failing closed or working.

- an ``async def`` handler given to a synchronous ``execute`` was recorded as a LIVE run
  with ``ok=True`` and a coroutine as its result: the tool never ran;
- ``engine.registry.register(contract)`` was accepted, but ``decide`` still answered
  "unknown tool";
- an approver raising a framework's pause signal was recorded as a denial.
"""

from __future__ import annotations

import functools

import pytest

from buddy.engine import Engine, replay
from buddy.rules.base._values import ExecutionMode, RiskLevel
from buddy.rules.base.errors import InputError
from buddy.rules.tables import ToolContract


def _engine() -> Engine:
    return Engine.default(clock=lambda: 1_700_000_000.0)


class TestAsyncHandlerInASyncCall:
    def test_an_async_live_handler_does_not_run_and_the_trail_says_so(self):
        engine = _engine()
        ran = []

        async def live(args):
            ran.append(args)
            return "sent"

        engine.register_handler("memory_search", live=live)
        result = engine.execute("a", "memory_search", {"q": "x"}, confidence=0.99)
        assert ran == []                                  # the body never ran
        assert not result.ok and result.result is None
        assert "async" in result.error and "did not run" in result.error
        [run] = [r for r in engine.audit.records() if r["kind"] == "execution"]
        assert run["data"]["ok"] is False and "did not run" in run["data"]["error"]
        assert replay(engine.audit).ok

    @pytest.mark.parametrize("make", [
        lambda f: functools.partial(f),                      # a partial of an async def
        lambda f: type("Tool", (), {"__call__": staticmethod(f)})(),  # an async __call__
        lambda f: (lambda args: f(args)),                    # a sync callable that makes one
    ], ids=["partial", "callable-object", "returns-a-coroutine"])
    def test_every_way_of_being_async_is_refused_and_no_coroutine_is_left(self, make):
        engine = _engine()
        ran = []

        async def live(args):
            ran.append(args)

        engine.register_handler("memory_search", live=make(live))
        result = engine.execute("a", "memory_search", {}, confidence=0.99)
        assert ran == [] and not result.ok and "did not run" in result.error
        # pytest turns warnings into errors: a coroutine never awaited would have failed

    def test_an_async_mock_fails_closed_too(self):
        engine = _engine()

        async def mock(args):
            return {}

        engine.register_handler("memory_search", mock=mock)
        engine.lock("test")  # MOCK only
        result = engine.execute("a", "memory_search", {}, confidence=0.99)
        assert result.mode is ExecutionMode.MOCK and not result.ok
        from buddy.engine.core._controller import AsyncHandlerError

        assert issubclass(AsyncHandlerError, TypeError) and "AsyncHandlerError" in result.error


class TestToolsRegisteredLater:
    def test_a_tool_registered_after_the_engine_is_decided(self):
        engine = _engine()
        engine.registry.register(ToolContract("weather_lookup", RiskLevel.LOW, True))
        decision = engine.decide("a", "weather_lookup", 0.99)
        assert decision.allowed and "unknown tool" not in decision.reason
        result = engine.execute("a", "weather_lookup", {}, confidence=0.99)
        assert result.ok and result.mode is not None
        assert replay(engine.audit).ok

    def test_its_rate_limit_holds(self):
        engine = _engine()
        engine.registry.register(ToolContract("pager", RiskLevel.LOW, True,
                                              rate_limit_per_minute=2))
        allowed = [engine.decide("a", "pager", 0.99).allowed for _ in range(4)]
        assert allowed == [True, True, False, False]

    def test_two_engines_on_one_catalogue_both_learn_it_and_a_dead_one_is_forgotten(self):
        first = _engine()
        second = Engine(first.registry, first.table, clock=lambda: 0.0)
        gone = Engine(first.registry, first.table, clock=lambda: 0.0)
        del gone
        first.registry.register(ToolContract("ping", RiskLevel.LOW, True))
        assert first.decide("a", "ping", 0.99).allowed and second.decide("a", "ping", 0.99).allowed


class Pause(Exception):  # noqa: N818 - a framework's signal, named as LangGraph names its own
    """A framework's signal that the run pauses for a person (LangGraph: GraphInterrupt)."""


class TestPauseSignals:
    def _asked(self, engine: Engine):
        def approver(request):
            raise Pause(request.tool)
        engine.approver = approver
        return engine

    def test_a_configured_pause_passes_through_and_is_not_a_denial(self):
        engine = self._asked(_engine())
        engine.pass_through = (Pause,)
        before = len(list(engine.audit.records()))
        with pytest.raises(Pause, match="msgraph_send_email"):
            engine.decide("a", "msgraph_send_email", 0.95)
        with pytest.raises(Pause):
            engine.execute("a", "msgraph_send_email", {"to": "x"}, confidence=0.95)
        events = list(engine.audit.records())[before:]
        assert not any(e["kind"] == "decision" and e["data"].get("approved") is False
                       for e in events)  # nothing says it was denied

    def test_unconfigured_it_stays_a_denial(self):
        engine = self._asked(_engine())
        decision = engine.decide("a", "msgraph_send_email", 0.95)
        assert not decision.allowed or decision.mode is not ExecutionMode.LIVE

    def test_only_exception_types_are_taken(self):
        with pytest.raises(InputError, match="pass_through must hold exception types"):
            _engine().pass_through = (Pause, "GraphInterrupt")
