"""A digest of any arguments, to spot the same action twice without storing it."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["args_digest"]

_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS
_END = object()  # closes a container in the walk of :func:`_walk_digest`


def args_digest(args: Any, key: bytes | None = None) -> str:
    """32 hex digits of SHA-256 over the arguments in a canonical form (keys sorted);
    with ``key``, of HMAC-SHA-256 (without the key, it says nothing about them).

    JSON-able arguments are hashed as sorted-key JSON; anything JSON cannot
    hold (integers beyond 64 bits, tuple keys, nesting deeper than 254) is
    hashed by a walk that needs no recursion. Equal arguments give equal
    digests either way.

    >>> args_digest({"b": 1, "a": 2}) == args_digest({"a": 2, "b": 1})
    True
    >>> len(args_digest({"n": 2 ** 70, (1, 2): "tuple key"}))
    32
    """
    try:
        data = orjson.dumps(args, default=repr, option=_OPTIONS)
    except (orjson.JSONEncodeError, TypeError, ValueError, RecursionError):
        walked = _walk_digest(args)
        if key is None:
            return walked
        return hmac.new(key, walked.encode(), hashlib.sha256).hexdigest()[:32]
    if key is None:
        return hashlib.sha256(data).hexdigest()[:32]
    return hmac.new(key, data, hashlib.sha256).hexdigest()[:32]


def _walk_digest(value: Any) -> str:
    h = hashlib.sha256(b"buddy-args/walk\x00")
    stack: list[Any] = [value]
    open_ids: set[int] = set()
    while stack:
        v = stack.pop()
        if v is _END:
            h.update(b")")
            open_ids.discard(stack.pop())
            continue
        if isinstance(v, Mapping | list | tuple):
            if id(v) in open_ids:
                h.update(b"<cycle>")
                continue
            open_ids.add(id(v))
            stack += [id(v), _END]
            if isinstance(v, Mapping):
                h.update(b"{(")
                for k, item in sorted(v.items(), key=lambda kv: _key(kv[0]), reverse=True):
                    stack += [item, _Key(k)]
            else:
                h.update(b"[(")
                stack += reversed(v)
            continue
        h.update(_token(v.key if isinstance(v, _Key) else v) + b"\x00")
    return h.hexdigest()[:32]


class _Key:
    __slots__ = ("key",)

    def __init__(self, key: Any) -> None:
        self.key = key


def _key(k: Any) -> tuple[str, bytes]:
    return type(k).__name__, _token(k)


def _token(v: Any) -> bytes:
    """A scalar (or a key of any kind) as tagged bytes."""
    if v is None or isinstance(v, bool):
        return repr(v).encode()
    if isinstance(v, int):
        return b"i" + format(v, "x").encode()  # hex: no cap on the digits of huge ints
    if isinstance(v, float | str):
        return type(v).__name__[0].encode() + repr(v).encode("utf-8", "surrogatepass")
    if isinstance(v, tuple):
        return b"t" + b",".join(_token(x) for x in v[:64])
    try:
        return b"o" + type(v).__name__.encode() + b":" + repr(v).encode("utf-8", "replace")
    except Exception:
        return b"o" + type(v).__name__.encode()
