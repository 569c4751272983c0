"""Guarding a callable: ``@engine.guard("tool", agent=...)`` on a function or a method.

The guarded function keeps its signature, type hints and metadata, so frameworks that
build a tool's schema from a signature (LangChain's ``@tool``, the OpenAI Agents SDK's
``function_tool``, FastMCP) see the same parameters. A call binds its own arguments into
one dict, the engine decides and runs it (``execute``, or ``aexecute`` for an
``async def``), and the function's own arguments are rebuilt from the dict the engine
hands its handler: the arguments an approver edited, when it edited them.
"""

from __future__ import annotations

import collections.abc as abc
import contextvars
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from buddy.engine.core._controller import Handlers
from buddy.rules.base._masking import shown
from buddy.rules.base._values import plain_confidence, valid_confidence
from buddy.rules.base.errors import BuddyError, InputError

if TYPE_CHECKING:
    from buddy.engine.core._controller import ExecutionResult
    from buddy.engine.core._engine import Engine

__all__ = ["CallRefused", "ToolFailed", "empty_value", "guard"]

F = TypeVar("F", bound=Callable[..., Any])
_P = inspect.Parameter
_POSITIONAL = (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD)


class CallRefused(BuddyError, PermissionError):
    """The engine did not allow a guarded call (refused, denied, rate limited, unknown
    tool): the function did not run. ``result`` is the :class:`ExecutionResult`; its
    ``decision`` says which rule refused it and why."""

    def __init__(self, result: ExecutionResult) -> None:
        self.result = result
        decision = result.decision
        super().__init__(f"{result.tool} refused for agent {result.agent!r} "
                         f"({result.context}): {decision.rule}: {decision.reason}")

    def __str__(self) -> str:  # OSError's formatting never applies here
        return str(self.args[0])


class ToolFailed(BuddyError, RuntimeError):
    """A guarded call that ran and failed without an exception of its function's to raise
    (the engine's own, e.g. an async handler given to a synchronous run). ``result`` is
    the :class:`ExecutionResult`."""

    def __init__(self, result: ExecutionResult) -> None:
        self.result = result
        super().__init__(f"{result.tool} failed for agent {result.agent!r} "
                         f"({result.context}): {result.error}")


# -- the MOCK value a return annotation promises ----------------------------------
_EMPTY: dict[Any, Callable[[], Any]] = {
    list: list, abc.Sequence: list, abc.MutableSequence: list, abc.Collection: list,
    abc.Iterable: list,
    dict: dict, abc.Mapping: dict, abc.MutableMapping: dict,
    set: set, abc.Set: set, abc.MutableSet: set, frozenset: frozenset,
    tuple: tuple, str: str, bytes: bytes, int: int, float: float, bool: bool,
}
_UNIONS = (typing.Union, types.UnionType)


def empty_value(annotation: Any) -> Any:
    """The empty value of a (resolved) type annotation: what a guarded function without a
    ``mock`` returns in MOCK.

    ``list``/``Sequence``/``Iterable`` -> ``[]``, ``dict``/``Mapping`` -> ``{}``,
    ``set`` -> ``set()``, ``frozenset`` -> ``frozenset()``, ``str`` -> ``""``,
    ``bytes`` -> ``b""``, ``int`` -> ``0``, ``float`` -> ``0.0``, ``bool`` -> ``False``,
    ``tuple`` / ``tuple[X, ...]`` -> ``()``, a fixed ``tuple[X, Y]`` -> the tuple of its
    items' empty values; ``Optional[X]`` (``X | None``) -> ``None``, another union -> its
    first member's, ``Literal[a, ...]`` -> ``a``, ``Annotated[X, ...]`` -> ``X``'s; and
    ``None``, no annotation, ``Any`` and any other type -- a dataclass, a pydantic model, a
    ``TypedDict``, an enum, a subclass of ``list`` -- -> ``None``.

    >>> empty_value(list[str]), empty_value(dict), empty_value(int | None)
    ([], {}, None)
    >>> empty_value(tuple[int, str]), empty_value(typing.Literal["a", "b"])
    ((0, ''), 'a')
    """
    if annotation is None or annotation is type(None):
        return None
    origin = typing.get_origin(annotation)
    members = typing.get_args(annotation)
    if origin is typing.Annotated:
        return empty_value(members[0])
    if origin in _UNIONS:
        return None if type(None) in members else empty_value(members[0])
    if origin is typing.Literal:
        return members[0] if members else None
    if origin is tuple and members and members[-1] is not Ellipsis:
        return tuple(empty_value(m) for m in members)
    try:
        make = _EMPTY.get(annotation if origin is None else origin)
    except TypeError:  # an unhashable "annotation"
        return None
    return None if make is None else make()


class _Probe:
    """An object with only the annotation to resolve (so one annotation that does not
    resolve leaves the others alone)."""

    def __init__(self, annotation: Any) -> None:
        self.__annotations__ = {"return": annotation}


def _resolved(annotation: Any, globalns: dict[str, Any]) -> Any:
    """``annotation`` resolved (a string, or one holding forward references); when it does
    not resolve, its outer type alone (``"list[Undefined]"`` -> ``list``), else None."""
    try:
        return typing.get_type_hints(_Probe(annotation), globalns=globalns)["return"]
    except Exception:
        pass
    if isinstance(annotation, str):
        head = annotation.split("[", 1)[0]
        if head != annotation and "|" not in head:
            try:
                return typing.get_type_hints(_Probe(head.strip()), globalns=globalns)["return"]
            except Exception:
                pass
    return None


# -- one guarded call in flight ------------------------------------------------------
class _Call:
    """A guarded call the engine is running: its guard and its receiver (a method's
    ``self``, which is not one of the arguments the engine records)."""

    __slots__ = ("guard", "receiver")

    def __init__(self, guard: _Guard, receiver: tuple[Any, ...]) -> None:
        self.guard = guard
        self.receiver = receiver


_CURRENT: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "buddy_guarded_call", default=None)


def _is_async(fn: Callable[..., Any]) -> bool:
    """Whether calling ``fn`` makes a coroutine (an ``async def``, a partial of one, an
    object whose ``__call__`` is one)."""
    if inspect.iscoroutinefunction(fn):
        return True
    return not inspect.isroutine(fn) and inspect.iscoroutinefunction(type(fn).__call__)


def _leads_to(value: Any, target: Callable[..., Any]) -> bool:
    """Whether ``value`` is ``target``, or a decorator's wrapper of it (``__wrapped__``
    by ``__wrapped__``); a ``staticmethod`` or ``classmethod`` is neither."""
    for _ in range(64):  # a chain of decorators, never a loop
        if value is target:
            return True
        if value is None or isinstance(value, staticmethod | classmethod):
            return False
        value = getattr(value, "__wrapped__", None)
    return False


class _Guard:
    """One guarded callable on one engine: binds its calls, rebuilds them, runs them."""

    def __init__(self, engine: Engine, tool: str, agent: str, confidence: float | None,
                 approval: bool | None, fn: Callable[..., Any],
                 substitutes: dict[str, Callable[..., Any] | None]) -> None:
        self.engine, self.tool, self.agent = engine, tool, agent
        self.confidence, self.approval = confidence, approval
        self.fn = fn
        self.name = getattr(fn, "__qualname__", None) or shown(fn)
        try:
            self.signature = inspect.signature(fn)
        except (TypeError, ValueError) as exc:
            raise InputError(f"guard {tool!r}: {self.name} has no signature to bind its "
                             f"calls to ({exc})") from None
        params = list(self.signature.parameters.values())
        # A method's first parameter, when it is called on an object (see bind).
        self.first = params[0].name if params and params[0].kind in _POSITIONAL else None
        self.bare = self.signature.replace(parameters=params[1:])  # without it
        self.is_async = _is_async(fn)
        self.substitutes = substitutes
        self.wrapper: Callable[..., Any] | None = None  # the guarded function, once made
        self._returns: tuple[Any] | None = None  # the return type, resolved at first MOCK

    # -- binding -----------------------------------------------------------------
    def _is_receiver(self, obj: Any) -> bool:
        """Whether ``obj``, a call's first argument, is the object (or class) the guarded
        function was called on as a method: a class of its holds the guarded function
        under the function's name, itself or under decorators that wrap it (a
        ``classmethod`` of it, for a class; never a ``staticmethod``)."""
        name, wrapper = getattr(self.fn, "__name__", None), self.wrapper
        if name is None or wrapper is None:
            return False
        if any(_leads_to(vars(k).get(name), wrapper) for k in type(obj).__mro__):
            return True
        return isinstance(obj, type) and any(
            isinstance(v, classmethod) and _leads_to(v.__func__, wrapper)
            for v in (vars(k).get(name) for k in obj.__mro__))

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[tuple[Any, ...],
                                                                           dict[str, Any]]:
        """The receiver of a call (a method's ``self`` or ``cls``; else empty) and its
        other arguments by name, defaults applied. A call that does not fit the
        signature raises ``TypeError``, as the function would."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        named = dict(bound.arguments)
        if self.first is not None and args and self._is_receiver(args[0]):
            return (named.pop(self.first),), named
        return (), named

    def rebuild(self, args: Mapping[str, Any]) -> tuple[tuple[Any, ...], tuple[Any, ...],
                                                        dict[str, Any]]:
        """The receiver of the guarded call running now (if any), and the positional
        and keyword arguments of the call whose arguments by name are ``args`` (as the
        engine hands them to a handler: possibly edited by an approver), defaults
        filled in. Arguments that do not fit raise ``TypeError``."""
        call = _CURRENT.get()
        receiver = call.receiver if call is not None and call.guard is self else ()
        signature = self.bare if receiver else self.signature
        unknown = sorted(k for k in args if k not in signature.parameters)
        if unknown:
            raise TypeError(f"{self.name}() got arguments it has no parameter for: "
                            f"{', '.join(map(repr, unknown))}")
        arguments: dict[str, Any] = {}
        for p in signature.parameters.values():
            if p.name in args:
                value = args[p.name]
            elif p.default is not _P.empty:
                value = p.default
            elif p.kind is _P.VAR_POSITIONAL:
                value = ()
            elif p.kind is _P.VAR_KEYWORD:
                value = {}
            else:
                raise TypeError(f"{self.name}() is missing its argument {p.name!r}" + (
                    " (a method runs when called on its object)"
                    if p.name in ("self", "cls") else ""))
            if p.kind is _P.VAR_POSITIONAL:
                value = tuple(value)
            elif p.kind is _P.VAR_KEYWORD:
                value = dict(value)
            arguments[p.name] = value
        bound = inspect.BoundArguments(signature, arguments)
        return receiver, bound.args, bound.kwargs

    # -- the MOCK value ----------------------------------------------------------
    def empty(self) -> Any:
        """A new empty value of the function's return type (resolved at the first MOCK,
        when the names it uses are defined)."""
        if self._returns is None:
            annotation = self.signature.return_annotation
            globalns = getattr(inspect.unwrap(self.fn), "__globals__", {})
            self._returns = (None if annotation is inspect.Signature.empty
                             else _resolved(annotation, globalns),)
        return empty_value(self._returns[0])

    # -- handlers, each called by the engine with one dict -------------------------
    def handler(self, fn: Callable[..., Any]) -> Callable[[dict[str, Any]], Any]:
        """``fn`` (the function, or a substitute of the same signature) as a handler."""
        if _is_async(fn):
            async def run_async(args: dict[str, Any]) -> Any:
                receiver, pos, kw = self.rebuild(args)
                return await fn(*receiver, *pos, **kw)
            return run_async

        def run(args: dict[str, Any]) -> Any:
            receiver, pos, kw = self.rebuild(args)
            return fn(*receiver, *pos, **kw)
        return run

    def undo_handler(self, fn: Callable[..., Any]) -> Callable[[dict[str, Any], Any], Any]:
        """``undo`` called as ``undo([self,] result, *args, **kwargs)``."""
        if _is_async(fn):
            async def undo_async(args: dict[str, Any], result: Any) -> Any:
                receiver, pos, kw = self.rebuild(args)
                return await fn(*receiver, result, *pos, **kw)
            return undo_async

        def undo(args: dict[str, Any], result: Any) -> Any:
            receiver, pos, kw = self.rebuild(args)
            return fn(*receiver, result, *pos, **kw)
        return undo

    def mock_handler(self) -> Callable[[dict[str, Any]], Any]:
        mock = self.substitutes["mock"]
        if mock is not None:
            return self.handler(mock)

        def empty(args: dict[str, Any]) -> Any:
            self.rebuild(args)  # arguments an approver edited must still fit
            return self.empty()
        return empty

    # -- the outcome of a call -----------------------------------------------------
    @staticmethod
    def outcome(result: ExecutionResult) -> Any:
        """What the call returns: the result of the run; else :class:`CallRefused` when it
        was not allowed, the exception its handler raised, or :class:`ToolFailed`."""
        if result.ok:
            return result.result
        if not result.decision.allowed:
            raise CallRefused(result)
        if result.exception is not None:
            raise result.exception
        raise ToolFailed(result)

    def wrap(self) -> Callable[..., Any]:
        fn, engine, tool, agent = self.fn, self.engine, self.tool, self.agent
        confidence, approval = self.confidence, self.approval
        if self.is_async:
            @functools.wraps(fn)
            async def guarded_async(*args: Any, **kwargs: Any) -> Any:
                receiver, named = self.bind(args, kwargs)
                token = _CURRENT.set(_Call(self, receiver))
                try:
                    result = await engine.aexecute(agent, tool, named, confidence=confidence,
                                                   approval=approval)
                finally:
                    _CURRENT.reset(token)
                return self.outcome(result)
            self.wrapper = guarded_async
            return guarded_async

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            receiver, named = self.bind(args, kwargs)
            token = _CURRENT.set(_Call(self, receiver))
            try:
                result = engine.execute(agent, tool, named, confidence=confidence,
                                        approval=approval)
            finally:
                _CURRENT.reset(token)
            return self.outcome(result)
        self.wrapper = guarded
        return guarded


def _checked(tool: object, agent: object, confidence: object, approval: object,
             substitutes: Mapping[str, object]) -> None:
    where = f"guard {tool!r}"
    if type(agent) is not str or not agent:
        raise InputError(f"{where}: agent must be a non-empty string (got {shown(agent)})")
    if confidence is not None and not valid_confidence(confidence):
        raise InputError(f"{where}: confidence must be a number in [0, 1] or None "
                         f"(got {shown(confidence)})")
    if approval is not None and approval is not True and approval is not False:
        raise InputError(f"{where}: approval must be True, False or None "
                         f"(got {shown(approval)})")
    for name, value in substitutes.items():
        if value is not None and not callable(value):
            raise InputError(f"{where}: {name} must be callable or None (got {shown(value)})")


def _defined_as(g: _Guard) -> tuple[str, str | None]:
    return g.name, getattr(g.fn, "__module__", None)


def _only_guard(engine: Engine, tool: str, g: _Guard) -> None:
    """Refuse to guard a tool that has handlers on ``engine`` already, unless a guard of
    a function of the same name gave them (its definition run again: it replaces it)."""
    had = engine.handlers(tool)
    if had == Handlers():
        return
    other = getattr(had.live, "_buddy_guard", None)
    if isinstance(other, _Guard) and _defined_as(other) == _defined_as(g):
        return
    by = f"is guarded by {other.name}" if isinstance(other, _Guard) else \
        "has handlers (register_handler)"
    raise InputError(f"guard {tool!r}: the tool {by} on this engine already; one "
                     "guarded function per tool and engine")


def guard(engine: Engine, tool: str, *, agent: str, confidence: float | None = None,
          mock: Callable[..., Any] | None = None, dry_run: Callable[..., Any] | None = None,
          undo: Callable[..., Any] | None = None,
          approval: bool | None = None) -> Callable[[F], F]:
    """A decorator that runs a function through ``engine`` as ``tool`` (see
    :meth:`buddy.engine.Engine.guard`)."""
    if type(tool) is not str:
        raise InputError(f"guard: tool must be a string (got {shown(tool)})")
    engine.registry.get(tool)  # UnknownToolError: a tool must be known before it is guarded
    substitutes = {"mock": mock, "dry_run": dry_run, "undo": undo}
    _checked(tool, agent, confidence, approval, substitutes)
    held = plain_confidence(confidence) if confidence is not None else None

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise InputError(f"guard {tool!r}: guards a function or method (got {shown(fn)}); "
                             "put @staticmethod or @classmethod above @engine.guard")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise InputError(f"guard {tool!r}: {fn.__qualname__} is a generator function: "
                             "its body would run after the engine returned, unguarded")
        g = _Guard(engine, tool, agent, held, approval, fn, substitutes)
        if not g.is_async:
            for name, value in substitutes.items():
                if value is not None and _is_async(value):
                    raise InputError(f"guard {tool!r}: {name} is async but {g.name} is not "
                                     "(a synchronous call cannot await it)")
        _only_guard(engine, tool, g)
        live = g.handler(fn)
        live._buddy_guard = g  # type: ignore[attr-defined]
        engine.register_handler(
            tool, mock=g.mock_handler(), live=live,
            dry_run=g.handler(dry_run) if dry_run is not None else None,
            undo=g.undo_handler(undo) if undo is not None else None)
        return typing.cast(F, g.wrap())
    return decorate
