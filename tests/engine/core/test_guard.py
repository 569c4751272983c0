"""``@engine.guard``: any function or method, sync or async, through the engine (issue 11)."""

from __future__ import annotations

import asyncio
import collections.abc as abc
import dataclasses
import enum
import functools
import inspect
import typing
from typing import Annotated, Any, Literal, NamedTuple, Optional, TypedDict

import pytest

from buddy.engine import (
    Approval,
    CallRefused,
    Engine,
    ExecutionMode,
    ToolFailed,
    replay,
)
from buddy.engine.core._guard import empty_value
from buddy.rules.base._values import RiskLevel
from buddy.rules.base.errors import BuddyError, InputError, UnknownToolError
from buddy.rules.tables import ToolContract

LIVE = 0.95  # memory_search (LOW risk) runs LIVE at >= 0.70, DRY_RUN at >= 0.50
DRY = 0.6
LOW = 0.1    # MOCK, allowed


def _engine(**kwargs: Any) -> Engine:
    return Engine.default(clock=lambda: 1_700_000_000.0, **kwargs)


def _runs(engine: Engine) -> list[dict[str, Any]]:
    return [r["data"] for r in engine.audit.records() if r["kind"] == "execution"]


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Movie(TypedDict):
    title: str


class Colour(enum.Enum):
    RED = "red"


class Pair(NamedTuple):
    a: int
    b: int


class Names(list):
    pass


class TestSignature:
    def test_the_signature_hints_and_metadata_are_the_functions(self):
        engine = _engine()

        def search(query: str, /, limit: int = 3, *tags: str, exact: bool = False,
                   **extra: float) -> list[str]:
            """Search the memory."""
            return []

        guarded = engine.guard("memory_search", agent="a", confidence=LIVE)(search)
        assert inspect.signature(guarded) == inspect.signature(search)
        assert typing.get_type_hints(guarded) == typing.get_type_hints(search) == {
            "query": str, "limit": int, "tags": str, "exact": bool, "extra": float,
            "return": list[str]}
        assert guarded.__name__ == "search" and guarded.__doc__ == "Search the memory."
        assert guarded.__qualname__ == search.__qualname__
        assert guarded.__wrapped__ is search
        assert not inspect.iscoroutinefunction(guarded)

    def test_an_async_function_stays_a_coroutine_function(self):
        engine = _engine()

        async def fetch(url: str, timeout: float = 5.0) -> dict[str, str]:
            return {}

        guarded = engine.guard("memory_search", agent="a", confidence=LIVE)(fetch)
        assert inspect.iscoroutinefunction(guarded)
        assert inspect.signature(guarded) == inspect.signature(fetch)
        assert typing.get_type_hints(guarded) == {"url": str, "timeout": float,
                                                  "return": dict[str, str]}

    def test_a_method_binds_like_the_method(self):
        engine = _engine()

        class Memory:
            def __init__(self, name: str) -> None:
                self.name = name

            @engine.guard("memory_search", agent="a", confidence=LIVE)
            def search(self, query: str, limit: int = 2) -> list[str]:
                return [f"{self.name}:{query}"] * limit

        one, two = Memory("one"), Memory("two")
        assert list(inspect.signature(one.search).parameters) == ["query", "limit"]
        assert inspect.signature(Memory.search) == inspect.signature(
            Memory.search.__wrapped__)
        assert one.search("q") == ["one:q", "one:q"]
        assert two.search("r", limit=1) == ["two:r"]
        # self is not one of the arguments the engine records
        assert [r["args"] for r in _runs(engine)] == [{"query": "q", "limit": 2},
                                                      {"query": "r", "limit": 1}]

    def test_a_classmethod_and_a_staticmethod_above_the_guard(self):
        engine = _engine()

        class Tools:
            prefix = "p"

            @classmethod
            @engine.guard("memory_search", agent="a", confidence=LIVE)
            def search(cls, query: str) -> str:
                return cls.prefix + query

            @staticmethod
            @engine.guard("text_extract", agent="a", confidence=LIVE)
            def extract(self: str) -> str:  # a first parameter named self, yet no method
                return self.upper()

        assert Tools.search("x") == "px" and Tools().search("y") == "py"
        assert Tools.extract("doc") == "DOC"
        assert [r["args"] for r in _runs(engine)] == [{"query": "x"}, {"query": "y"},
                                                      {"self": "doc"}]

    def test_a_method_under_another_decorator_and_called_on_its_class(self):
        engine = _engine()

        def logged(fn):
            @functools.wraps(fn)
            def inner(*args, **kwargs):
                return fn(*args, **kwargs)
            return inner

        class Base:
            def __init__(self, name: str) -> None:
                self.name = name

            @logged
            @engine.guard("memory_search", agent="a", confidence=LIVE)
            def search(self, query: str) -> str:
                return f"{self.name}:{query}"

        class Child(Base):
            def search(self, query: str) -> str:  # an override calling the guarded one
                return "child+" + super().search(query)

        assert Base("b").search("q") == "b:q"
        assert Base.search(Base("c"), "r") == "c:r"
        assert Child("d").search("s") == "child+d:s"
        assert [r["args"] for r in _runs(engine)] == [{"query": "q"}, {"query": "r"},
                                                      {"query": "s"}]

    def test_a_plain_functions_object_argument_is_an_argument(self):
        engine = _engine()

        @engine.guard("memory_search", agent="a", confidence=LIVE)
        def describe(self: Any, query: str) -> str:  # not a method: self is an argument
            return f"{self}:{query}"

        assert describe("me", "q") == "me:q"
        assert _runs(engine)[0]["args"] == {"self": "me", "query": "q"}

    def test_an_async_method(self):
        engine = _engine()

        class Client:
            def __init__(self) -> None:
                self.seen: list[str] = []

            @engine.guard("memory_search", agent="a", confidence=LIVE)
            async def search(self, query: str) -> list[str]:
                await asyncio.sleep(0)
                self.seen.append(query)
                return [query]

        client = Client()
        assert inspect.iscoroutinefunction(client.search)
        assert asyncio.run(client.search("q")) == ["q"] and client.seen == ["q"]


class TestLive:
    def test_the_function_runs_once_with_its_own_arguments(self):
        engine = _engine()
        calls = []

        @engine.guard("memory_search", agent="a", confidence=LIVE)
        def search(query, /, limit=3, *tags, exact=False, **extra):
            calls.append((query, limit, tags, exact, extra))
            return len(calls)

        assert search("q") == 1
        assert search("q", 5, "t1", "t2", exact=True, boost=2.0) == 2
        assert search("q", limit=7) == 3
        assert calls == [("q", 3, (), False, {}),
                         ("q", 5, ("t1", "t2"), True, {"boost": 2.0}),
                         ("q", 7, (), False, {})]

    def test_positional_only_by_name_is_refused_as_python_refuses_it(self):
        engine = _engine()
        calls = []

        @engine.guard("memory_search", agent="a", confidence=LIVE)
        def search(query, /, limit=3):
            calls.append(query)

        with pytest.raises(TypeError, match="positional only"):
            search(query="q")
        with pytest.raises(TypeError, match="missing a required argument"):
            search()
        assert calls == [] and _runs(engine) == []  # the engine never saw them

    def test_a_positional_only_name_also_in_kwargs_stays_apart(self):
        engine = _engine()
        calls = []

        @engine.guard("memory_search", agent="a", confidence=LIVE)
        def search(query, /, **extra):
            calls.append((query, extra))
            return "ok"

        assert search("q", query="in-extra") == "ok"
        assert calls == [("q", {"query": "in-extra"})]

    def test_the_audit_records_the_arguments_by_name_and_replays(self):
        engine = _engine()

        @engine.guard("memory_search", agent="agent-7", confidence=LIVE)
        def search(query: str, *tags: str, limit: int = 3, **extra: Any) -> list[str]:
            return [query] * limit

        assert search("q", "a", "b", limit=2, lang="en") == ["q", "q"]
        [run] = _runs(engine)
        assert run["agent"] == "agent-7" and run["tool"] == "memory_search"
        assert run["mode"] == "LIVE" and run["ok"] is True
        assert run["args"] == {"query": "q", "tags": ["a", "b"], "limit": 2,
                               "extra": {"lang": "en"}}
        assert run["result"] == ["q", "q"]
        assert replay(engine.audit).ok

    def test_keyword_only_and_defaults_are_applied(self):
        engine = _engine()
        seen = []

        @engine.guard("memory_search", agent="a", confidence=LIVE)
        def search(*, query: str, limit: int = 4) -> int:
            seen.append((query, limit))
            return limit

        assert search(query="q") == 4
        assert seen == [("q", 4)] and _runs(engine)[0]["args"] == {"query": "q", "limit": 4}

    def test_an_approvers_edited_arguments_are_what_runs(self):
        sent = []
        engine = _engine(approver=lambda request: Approval.edit(
            {**request.args, "to": "boss@example.com"}, "redirected"))

        @engine.guard("msgraph_send_email", agent="a", confidence=0.9)
        def send(to: str, subject: str, body: str = "") -> str:
            sent.append((to, subject, body))
            return "sent"

        assert send("all@example.com", "hi") == "sent"
        assert sent == [("boss@example.com", "hi", "")]
        assert replay(engine.audit).ok

    def test_edited_arguments_that_do_not_fit_raise_and_nothing_runs(self):
        sent = []
        engine = _engine(approver=lambda request: Approval.edit({"recipient": "x"}))

        @engine.guard("msgraph_send_email", agent="a", confidence=0.9)
        def send(to: str) -> str:
            sent.append(to)
            return "sent"

        with pytest.raises(TypeError, match="no parameter for: 'recipient'"):
            send("y")
        assert sent == [] and _runs(engine)[-1]["ok"] is False

    def test_a_guarded_function_calling_another_keeps_each_ones_arguments(self):
        engine = _engine()

        class Pages:
            def __init__(self, text: str) -> None:
                self.text = text

            @engine.guard("text_extract", agent="a", confidence=LIVE)
            def extract(self, page: int) -> str:
                return f"{self.text}[{page}]"

        @engine.guard("memory_search", agent="a", confidence=LIVE)
        def search(query: str, pages: Pages) -> list[str]:
            return [pages.extract(1), pages.extract(page=2), query]

        assert search("q", Pages("doc")) == ["doc[1]", "doc[2]", "q"]
        runs = _runs(engine)
        assert [(r["tool"], r["args"].get("page")) for r in runs] == [
            ("text_extract", 1), ("text_extract", 2), ("memory_search", None)]

    def test_the_engine_running_the_tool_by_name_runs_the_function(self):
        engine = _engine()

        @engine.guard("memory_search", agent="a", confidence=LIVE)
        def search(query: str, limit: int = 1) -> list[str]:
            return [query] * limit

        result = engine.execute("b", "memory_search", {"query": "z"}, confidence=LIVE)
        assert result.ok and result.result == ["z"]

    def test_a_method_run_by_name_without_its_object_fails_closed(self):
        engine = _engine()

        class Memory:
            @engine.guard("memory_search", agent="a", confidence=LIVE)
            def search(self, query: str) -> list[str]:
                return [query]

        result = engine.execute("b", "memory_search", {"query": "z"}, confidence=LIVE)
        assert not result.ok and result.error.endswith(
            "Memory.search() is missing its argument 'self' (a method runs when called on "
            "its object)")


class TestMock:
    @pytest.mark.parametrize(("annotation", "expected"), [
        (list, []), (list[str], []), (typing.List[int], []),  # noqa: UP006
        (abc.Sequence[str], []), (abc.Iterable[int], []),
        (dict, {}), (dict[str, int], {}), (abc.Mapping[str, Any], {}),
        (str, ""), (bytes, b""), (int, 0), (float, 0.0), (bool, False),
        (tuple, ()), (tuple[int, ...], ()), (tuple[int, str], (0, "")),
        (set, set()), (set[str], set()), (frozenset[str], frozenset()),
        (None, None), (type(None), None), (Optional[int], None),  # noqa: UP045
        (int | None, None), (int | str, 0), (Literal["a", "b"], "a"),
        (Annotated[list[int], "meta"], []),
        (Point, None), (Movie, None), (Colour, None), (Pair, None), (Names, None),
        (Any, None), (object, None), (abc.Iterator[int], None),
    ], ids=repr)
    def test_the_empty_value_of_the_return_annotation(self, annotation, expected):
        engine = _engine()
        ran = []

        def f(q: str):
            ran.append(q)
            return "live"

        f.__annotations__["return"] = annotation
        guarded = engine.guard("memory_search", agent="a", confidence=LOW)(f)
        value = guarded("x")
        assert value == expected and type(value) is type(expected) and ran == []
        [run] = _runs(engine)
        assert run["mode"] == "MOCK" and run["ok"] is True
        assert empty_value(annotation) == expected

    def test_no_annotation_is_none_and_never_the_simulators_dict(self):
        engine = _engine()

        @engine.guard("memory_search", agent="a", confidence=LOW)
        def f(q):
            return "live"

        assert f("x") is None

    def test_string_annotations_resolve_and_an_undefined_one_falls_back(self):
        engine = _engine()

        def a(q: str) -> list[Point]:
            return [Point(1, 2)]

        def b(q: str) -> list[Undefined]:  # type: ignore[name-defined]  # noqa: F821
            return []

        def c(q: str) -> Undefined:  # type: ignore[name-defined]  # noqa: F821
            return None

        assert isinstance(a.__annotations__["return"], str)  # from __future__ annotations
        guarded = engine.guard("memory_search", agent="a", confidence=LOW)(a)
        assert guarded("x") == []
        engine2 = _engine()
        assert engine2.guard("memory_search", agent="a", confidence=LOW)(b)("x") == []
        engine3 = _engine()
        assert engine3.guard("memory_search", agent="a", confidence=LOW)(c)("x") is None

    def test_each_mock_is_a_new_value(self):
        engine = _engine()

        @engine.guard("memory_search", agent="a", confidence=LOW)
        def f() -> list[int]:
            return [1]

        first = f()
        first.append(9)
        assert f() == []

    def test_a_mock_substitute_gets_the_functions_arguments(self):
        engine = _engine()

        def fake(query: str, limit: int = 2) -> list[str]:
            return [f"fake:{query}"] * limit

        @engine.guard("memory_search", agent="a", confidence=LOW, mock=fake)
        def search(query: str, limit: int = 2) -> list[str]:
            raise AssertionError("never LIVE")

        assert search("q") == ["fake:q", "fake:q"]
        assert _runs(engine)[0]["result"] == ["fake:q", "fake:q"]

    def test_a_lock_turns_live_into_the_mock(self):
        engine = _engine()
        ran = []

        @engine.guard("memory_search", agent="a", confidence=LIVE)
        def search(query: str) -> dict[str, int]:
            ran.append(query)
            return {"hits": 3}

        assert search("q") == {"hits": 3}
        engine.lock("incident")
        assert search("q") == {} and ran == ["q"]


class TestDryRun:
    def test_dry_run_runs_the_substitute_with_the_same_arguments(self):
        engine = _engine()
        ran = []

        def rehearse(query: str, limit: int = 1) -> list[str]:
            return [f"would search {query} x{limit}"]

        @engine.guard("memory_search", agent="a", confidence=DRY, dry_run=rehearse)
        def search(query: str, limit: int = 1) -> list[str]:
            ran.append(query)
            return [query]

        assert search("q", limit=2) == ["would search q x2"] and ran == []
        assert _runs(engine)[0]["mode"] == "DRY_RUN"

    def test_without_a_dry_run_the_call_falls_to_mock_and_says_why(self):
        engine = _engine()

        def fake(query: str) -> list[str]:
            return ["mocked"]

        @engine.guard("memory_search", agent="a", confidence=DRY, mock=fake)
        def search(query: str) -> list[str]:
            return [query]

        assert search("q") == ["mocked"]
        assert _runs(engine)[0]["mode"] == "MOCK"
        whys = [r["data"].get("why") for r in engine.audit.records()
                if r["kind"] == "transition" and r["event"] == "downgrade"]
        assert whys == ["no dry-run handler registered"]

    def test_waiting_for_approval_without_an_approver_is_a_dry_run(self):
        engine = _engine()
        sent = []

        @engine.guard("msgraph_send_email", agent="a", confidence=0.9,
                      dry_run=lambda to, subject: f"would send to {to}")
        def send(to: str, subject: str) -> str:
            sent.append(to)
            return "sent"

        assert send("x@example.com", "hi") == "would send to x@example.com"
        assert sent == []


class TestRefused:
    def test_a_denied_call_raises_call_refused_and_nothing_ran(self):
        engine = _engine(approver=lambda request: Approval.deny("not today"))
        sent = []

        @engine.guard("msgraph_send_email", agent="agent-1", confidence=0.9)
        def send(to: str) -> str:
            sent.append(to)
            return "sent"

        with pytest.raises(CallRefused) as caught:
            send("x@example.com")
        refused = caught.value
        assert sent == []
        assert isinstance(refused, PermissionError) and isinstance(refused, BuddyError)
        assert refused.result.decision.allowed is False and refused.result.mode is None
        assert str(refused) == (
            f"msgraph_send_email refused for agent 'agent-1' ({refused.result.context}): "
            f"{refused.result.decision.rule}: HIGH risk: approval denied; the call is halted")
        assert "\n" not in str(refused)
        assert replay(engine.audit).ok

    def test_approval_false_on_the_guard_denies(self):
        engine = _engine()

        @engine.guard("msgraph_send_email", agent="a", confidence=0.9, approval=False)
        def send(to: str) -> str:
            raise AssertionError("never runs")

        with pytest.raises(CallRefused, match="approval denied"):
            send("x")

    def test_a_rate_limit_refuses(self):
        engine = _engine()
        engine.registry.register(ToolContract("weather_lookup", RiskLevel.LOW, True,
                                              rate_limit_per_minute=1))
        ran = []

        @engine.guard("weather_lookup", agent="a", confidence=LIVE)
        def weather(city: str) -> str:
            ran.append(city)
            return "sunny"

        assert weather("Oslo") == "sunny"
        with pytest.raises(CallRefused, match="rate.limit") as caught:
            weather("Rome")
        assert ran == ["Oslo"] and caught.value.result.decision.rule == "rate.limit"

    def test_a_tool_registered_before_the_guard_is_guarded(self):
        engine = _engine()
        engine.registry.register(ToolContract("weather_lookup", RiskLevel.LOW, True))

        @engine.guard("weather_lookup", agent="a", confidence=LIVE)
        def weather(city: str) -> str:
            return "sunny"

        assert weather("Oslo") == "sunny"

    def test_an_unknown_tool_is_refused_at_decoration(self):
        engine = _engine()
        with pytest.raises(UnknownToolError, match="unknown tool 'no_such_tool'"):
            engine.guard("no_such_tool", agent="a")

    def test_an_unknown_agent_is_refused_per_call(self):
        engine = _engine(agents={"agent-1": ["mail.read"]})

        @engine.guard("memory_search", agent="stranger", confidence=LIVE)
        def search(query: str) -> list[str]:
            raise AssertionError("never runs")

        with pytest.raises(CallRefused, match="stranger"):
            search("q")

    def test_an_async_refusal(self):
        engine = _engine(approver=lambda request: Approval.deny("no"))
        sent = []

        @engine.guard("msgraph_send_email", agent="a", confidence=0.9)
        async def send(to: str) -> str:
            sent.append(to)
            return "sent"

        with pytest.raises(CallRefused, match="approval denied"):
            asyncio.run(send("x"))
        assert sent == []


class TestConfidence:
    def test_no_confidence_takes_the_engines_default(self):
        engine = _engine(default_confidence={"memory_search": LIVE, "*": LOW})

        @engine.guard("memory_search", agent="a")
        def search(query: str) -> list[str]:
            return [query]

        assert search("q") == ["q"]
        [run] = _runs(engine)
        assert run["mode"] == "LIVE" and run["confidence"] == LIVE

    def test_no_confidence_anywhere_is_refused(self):
        engine = _engine()

        @engine.guard("memory_search", agent="a")
        def search(query: str) -> list[str]:
            raise AssertionError("never runs")

        with pytest.raises(CallRefused, match="input.confidence"):
            search("q")

    def test_a_confidence_provider_sees_the_functions_arguments(self):
        asked = []

        def provider(agent: str, tool: str, args: Any) -> float:
            asked.append((agent, tool, dict(args)))
            return LIVE

        engine = _engine(confidence_provider=provider)

        @engine.guard("memory_search", agent="a")
        def search(query: str, limit: int = 1) -> list[str]:
            return [query]

        assert search("q") == ["q"]
        assert asked == [("a", "memory_search", {"query": "q", "limit": 1})]


class TestExceptions:
    def test_the_functions_own_exception_propagates(self):
        engine = _engine()
        boom = KeyError("missing")

        @engine.guard("memory_search", agent="a", confidence=LIVE)
        def search(query: str) -> list[str]:
            raise boom

        with pytest.raises(KeyError) as caught:
            search("q")
        assert caught.value is boom
        [run] = _runs(engine)
        assert run["ok"] is False and run["error"] == "KeyError: 'missing'"
        assert replay(engine.audit).ok

    def test_a_substitutes_own_exception_propagates(self):
        engine = _engine()

        def fake(query: str) -> list[str]:
            raise ConnectionError("mock backend down")

        @engine.guard("memory_search", agent="a", confidence=LOW, mock=fake)
        def search(query: str) -> list[str]:
            return []

        with pytest.raises(ConnectionError, match="mock backend down"):
            search("q")

    def test_an_async_functions_own_exception_propagates(self):
        engine = _engine()

        class Custom(Exception):
            pass

        @engine.guard("memory_search", agent="a", confidence=LIVE)
        async def search(query: str) -> list[str]:
            await asyncio.sleep(0)
            raise Custom(query)

        with pytest.raises(Custom, match="q"):
            asyncio.run(search("q"))
        assert _runs(engine)[0]["ok"] is False

    def test_a_failure_without_an_exception_of_its_own_is_tool_failed(self):
        from buddy.engine.core._controller import ExecutionResult
        from buddy.engine.core._decision import Decision
        from buddy.engine.core._guard import _Guard
        from buddy.machines.escalation import ExecutionState

        decision = Decision(ExecutionMode.LIVE, True, "low.live", "ok", ExecutionState.LIVE)
        result = ExecutionResult("ctx-1", "a", "memory_search", decision, ExecutionMode.LIVE,
                                 ExecutionState.ROLLBACK, False, error="went wrong")
        with pytest.raises(ToolFailed, match=r"memory_search failed for agent 'a' "
                                             r"\(ctx-1\): went wrong") as caught:
            _Guard.outcome(result)
        assert caught.value.result is result


class TestAsync:
    def test_an_async_function_runs_live_once_with_its_arguments(self):
        engine = _engine()
        calls = []

        @engine.guard("memory_search", agent="a", confidence=LIVE)
        async def search(query: str, /, *tags: str, limit: int = 2, **extra: Any) -> list[str]:
            await asyncio.sleep(0)
            calls.append((query, tags, limit, extra))
            return [query] * limit

        assert asyncio.run(search("q", "t", limit=3, lang="en")) == ["q", "q", "q"]
        assert calls == [("q", ("t",), 3, {"lang": "en"})]
        [run] = _runs(engine)
        assert run["mode"] == "LIVE" and run["args"] == {
            "query": "q", "tags": ["t"], "limit": 3, "extra": {"lang": "en"}}
        assert replay(engine.audit).ok

    def test_async_mock_and_dry_run_substitutes_sync_or_async(self):
        async def rehearse(query: str) -> list[str]:
            await asyncio.sleep(0)
            return ["rehearsed"]

        def fake(query: str) -> list[str]:
            return ["faked"]

        engine = _engine()

        @engine.guard("memory_search", agent="a", confidence=DRY, dry_run=rehearse, mock=fake)
        async def search(query: str) -> list[str]:
            raise AssertionError("never LIVE")

        assert asyncio.run(search("q")) == ["rehearsed"]
        engine.lock()
        assert asyncio.run(search("q")) == ["faked"]

    def test_an_async_mock_value_by_return_type(self):
        engine = _engine()

        @engine.guard("memory_search", agent="a", confidence=LOW)
        async def search(query: str) -> dict[str, list[int]]:
            raise AssertionError("never LIVE")

        assert asyncio.run(search("q")) == {}

    def test_concurrent_calls_of_a_method_keep_their_objects(self):
        engine = _engine()

        class Box:
            def __init__(self, name: str) -> None:
                self.name = name

            @engine.guard("memory_search", agent="a", confidence=LIVE)
            async def get(self, key: str) -> str:
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                return f"{self.name}/{key}"

        async def main() -> list[str]:
            boxes = [Box(f"b{i}") for i in range(5)]
            return await asyncio.gather(*(b.get(str(i)) for i, b in enumerate(boxes)))

        assert asyncio.run(main()) == [f"b{i}/{i}" for i in range(5)]


class TestUndo:
    def test_a_session_rolls_a_guarded_tool_back_with_its_undo(self):
        engine = _engine()
        undone = []

        def unfill(result: str, field: str, value: str = "") -> None:
            undone.append((result, field, value))

        @engine.guard("form_fill", agent="a", confidence=LIVE, undo=unfill)
        def fill(field: str, value: str = "") -> str:
            return f"filled {field}"

        engine.register_handler("memory_search",
                                live=lambda args: (_ for _ in ()).throw(OSError("down")))
        with engine.session("a") as session:
            assert session.execute("form_fill", {"field": "name", "value": "Ada"},
                                   confidence=LIVE).ok
            failed = session.execute("memory_search", {}, confidence=LIVE)
        assert not failed.ok and undone == [("filled name", "name", "Ada")]
        assert replay(engine.audit).ok


class TestDecorationErrors:
    @pytest.mark.parametrize(("kwargs", "message"), [
        ({"agent": ""}, "guard 'memory_search': agent must be a non-empty string"),
        ({"agent": 3}, "agent must be a non-empty string (got 3)"),
        ({"agent": "a", "confidence": 1.5}, "confidence must be a number in [0, 1] or None"),
        ({"agent": "a", "confidence": True}, "confidence must be a number in [0, 1] or None"),
        ({"agent": "a", "approval": 1}, "approval must be True, False or None (got 1)"),
        ({"agent": "a", "mock": "fake"}, "mock must be callable or None (got 'fake')"),
    ])
    def test_bad_arguments_name_the_field(self, kwargs, message):
        engine = _engine()
        with pytest.raises(InputError) as caught:
            engine.guard("memory_search", **kwargs)
        assert message in str(caught.value)

    def test_a_tool_that_is_not_a_string(self):
        with pytest.raises(InputError, match="tool must be a string"):
            _engine().guard(["memory_search"], agent="a")

    def test_an_async_substitute_for_a_sync_function(self):
        engine = _engine()

        async def fake(q: str) -> list[str]:
            return []

        with pytest.raises(InputError, match="mock is async but .*search is not"):
            @engine.guard("memory_search", agent="a", mock=fake)
            def search(q: str) -> list[str]:
                return []

    def test_a_generator_function(self):
        engine = _engine()
        with pytest.raises(InputError, match="is a generator function"):
            @engine.guard("memory_search", agent="a")
            def search(q: str) -> abc.Iterator[str]:
                yield q

    def test_not_a_callable(self):
        with pytest.raises(InputError, match="guards a function or method"):
            _engine().guard("memory_search", agent="a")(classmethod(len))

    def test_one_guarded_function_per_tool_and_engine(self):
        engine = _engine()

        @engine.guard("memory_search", agent="a", confidence=LIVE)
        def first(q: str) -> str:
            return "first"

        with pytest.raises(InputError, match="is guarded by .*first on this engine already"):
            @engine.guard("memory_search", agent="a", confidence=LIVE)
            def second(q: str) -> str:
                return "second"

        assert first("q") == "first"  # still the first's handlers

        other = _engine()
        other.register_handler("memory_search", live=lambda args: "hand-written")
        with pytest.raises(InputError, match=r"the tool has handlers \(register_handler\) "
                                             r"on this engine already"):
            other.guard("memory_search", agent="a")(first.__wrapped__)

    def test_defining_the_same_function_again_replaces_it(self):
        engine = _engine()

        def make(value: str) -> Any:
            @engine.guard("memory_search", agent="a", confidence=LIVE)
            def search(q: str) -> str:
                return value
            return search

        make("old")
        assert make("new")("q") == "new"


def test_the_readme_example_runs_and_prints_what_its_comments_say():
    import contextlib
    import io
    import re
    import textwrap
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Embed it"):readme.index("## The policy")]
    [block] = [b for b in re.findall(r"```python\n(.*?)```", section, re.DOTALL)
               if "@engine.guard" in b]
    code = textwrap.dedent(block)
    assert len([line for line in code.splitlines() if line.strip()]) <= 10
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue().splitlines()
    comments = [line.split("# ", 1)[1] for line in code.splitlines() if line.startswith("print(")]
    assert printed == ["['invoices #0', 'invoices #1']", "[]"]
    assert len(comments) == 2 and all(p in c for p, c in zip(printed, comments, strict=True))
