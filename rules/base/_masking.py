"""Secrets kept out of logs and messages: :class:`Masker`, :func:`shown`, :func:`mask_text`.

Data (arguments, results) is masked by key: the value of a secret-looking key
is written ``***``. Free text that echoes a value (an error message, an
approver's reason) is masked inline: what follows a secret-looking word and a
separator (``password: hunter2``, ``api_key=sk-1``, ``Bearer abc``) is cut.
"""

from __future__ import annotations

import dataclasses
import re
import reprlib
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["DEFAULT_SECRET_PATTERN", "Masker", "described", "mask_text", "masked_repr", "shown"]

DEFAULT_SECRET_PATTERN = (
    r"pass(word|wd|phrase)?|pwd|secret|token|api[_-]?key|auth(orization)?|credential|"
    r"private[_-]?key|cookie|session[_-]?id|signature|bearer"
)
# A secret-looking word, a separator (": ", "=", or a space after "bearer"), then the rest.
_INLINE = re.compile(
    rf"(?P<word>\b(?:{DEFAULT_SECRET_PATTERN})\w*)"
    rf"(?P<sep>\s*[:=]\s*|(?<=bearer)\s+|(?<=Bearer)\s+)\S.*",
    re.IGNORECASE | re.DOTALL)


def _cut_secrets(text: str) -> str:
    return _INLINE.sub(r"\g<word>\g<sep>***", text)


def masked_repr(value: object) -> str:
    """How a log writes a value JSON has no form for (the JSON encoder's ``default``):
    its repr, whatever follows a secret-looking word cut.

    >>> masked_repr(type("Creds", (), {"__repr__": lambda s: "Creds(password=hunter2)"})())
    'Creds(password=***'
    """
    return mask_text(repr(value))


def mask_text(text: str) -> str:
    """``text`` as a log may record it: whatever follows a secret-looking word and a
    separator cut, a lone surrogate (which UTF-8 cannot hold) as its ``\\udxxx`` escape.

    >>> mask_text("login failed: password=hunter2 for ada")
    'login failed: password=***'
    >>> mask_text("Authorization: Bearer abc.def"), mask_text("unknown tool token_exchange")
    ('Authorization: ***', 'unknown tool token_exchange')
    """
    masked = _cut_secrets(text)
    if masked.isascii():
        return masked
    return masked.encode("utf-8", "backslashreplace").decode("utf-8")

_CONTAINERS = (Mapping, list, tuple)
# Types that hold no container, however subclassed types may behave: exact types only.
_SCALARS = frozenset({str, int, float, bool, type(None), bytes})
#: How many keys a :class:`Masker` remembers the verdict of before it starts over.
_KEYS_KEPT = 4096


def _is_record(value: object) -> bool:
    """Whether ``value`` is a dataclass or attrs instance: a log's JSON writes its fields
    under their names (orjson writes dataclasses natively), so they are masked too."""
    kind = type(value)
    return hasattr(kind, "__dataclass_fields__") or hasattr(kind, "__attrs_attrs__")


def _fields(value: Any) -> dict[str, Any]:
    """A record's fields by name (a dataclass's or an attrs class's)."""
    if hasattr(type(value), "__attrs_attrs__"):
        return {a.name: getattr(value, a.name) for a in type(value).__attrs_attrs__}
    return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}


class Masker:
    """Replaces the values of secret-looking keys with ``"***"``, at any depth.

    Walks without recursion, so arguments nested thousands deep are masked
    like any others; a container holding itself is written ``"<cycle>"``.

    >>> Masker().mask({"to": "a@b.c", "api_key": "sk-1", "nested": [{"Password": "x"}]})
    {'to': 'a@b.c', 'api_key': '***', 'nested': [{'Password': '***'}]}
    """

    MASK = "***"

    def __init__(self, pattern: str = DEFAULT_SECRET_PATTERN,
                 extra_keys: Iterable[str] = ()) -> None:
        extra = "|".join(re.escape(k) for k in extra_keys)
        self._re = re.compile(f"{pattern}|{extra}" if extra else pattern, re.IGNORECASE)
        self._keys: dict[str, bool] = {}  # is_secret of str keys seen, up to _KEYS_KEPT
        self._plain: set[str] = set()      # those of them that name no secret

    def is_secret(self, key: object) -> bool:
        """Whether ``key`` looks like it names a secret (a tuple key: any of its strings)."""
        if type(key) is str:  # the same few keys come back with every call: remember them
            known = self._keys.get(key)
            if known is None:
                known = self._re.search(key) is not None
                if len(self._keys) >= _KEYS_KEPT:
                    self._keys.clear()
                    self._plain.clear()
                self._keys[key] = known
                if not known:
                    self._plain.add(key)
            return known
        if isinstance(key, tuple):
            return any(self.is_secret(k) for k in key)
        return isinstance(key, str) and self._re.search(key) is not None

    def mask(self, value: Any) -> Any:
        """A copy of ``value`` (mappings as dicts, sequences as lists) with secrets masked."""
        kind = type(value)
        if kind in _SCALARS:
            return value
        if kind is dict:  # the common case, a flat dict of plain values, without the walk
            # Its keys all known to name no secret, its values all scalars: a copy, checked
            # in C.
            if self._plain.issuperset(value) and _SCALARS.issuperset(map(type, value.values())):
                return dict(value)
            known, mask = self._keys, self.MASK
            flat: dict[Any, Any] = {}
            for k, v in value.items():
                if type(v) not in _SCALARS:
                    break
                secret = known.get(k) if type(k) is str else None
                flat[k] = mask if (self.is_secret(k) if secret is None else secret) else v
            else:
                return flat
        if not isinstance(value, _CONTAINERS):
            if not _is_record(value):
                return value
            value = _fields(value)
        root: list[Any] = [None]
        open_ids: set[int] = set()        # containers on the current path (cycle check)
        # Work items: (source, destination, key in destination), or (None, None, id) to
        # close a container once its children are done.
        stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
        while stack:
            src, dest, key = stack.pop()
            if src is None and dest is None:
                open_ids.discard(key)
                continue
            if id(src) in open_ids:
                dest[key] = "<cycle>"
                continue
            open_ids.add(id(src))
            stack.append((None, None, id(src)))
            if _is_record(src):
                src = _fields(src)
            if isinstance(src, Mapping):
                out: Any = {}
                for k, v in src.items():
                    if self.is_secret(k):
                        out[k] = self.MASK
                    elif isinstance(v, _CONTAINERS) or _is_record(v):
                        out[k] = None
                        stack.append((v, out, k))
                    else:
                        out[k] = v
            else:
                out = list(src)
                for i, v in enumerate(out):
                    if isinstance(v, _CONTAINERS) or _is_record(v):
                        stack.append((v, out, i))
            dest[key] = out
        return root[0]


class _Shown(reprlib.Repr):
    """A short ``repr`` that masks secret keys and never fails on odd values."""

    def __init__(self, masker: Masker) -> None:
        super().__init__()
        self.masker = masker
        self.maxlevel = 3
        self.maxstring = 60
        self.maxother = 60
        self.maxlong = 40
        self.maxdict = self.maxlist = self.maxtuple = self.maxset = 6

    def repr_dict(self, x: dict[Any, Any], level: int) -> str:
        if not x:
            return "{}"
        if level <= 0:
            return "{...}"
        items = []
        for i, (k, v) in enumerate(x.items()):
            if i >= self.maxdict:
                items.append("...")
                break
            shown_v = "'***'" if self.masker.is_secret(k) else self.repr1(v, level - 1)
            items.append(f"{self.repr1(k, level - 1)}: {shown_v}")
        return "{" + ", ".join(items) + "}"

    def repr_str(self, x: str, level: int) -> str:
        return super().repr_str(_cut_secrets(x), level)  # repr escapes the rest

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 128:  # decimal text of huge ints is slow, and capped by Python
            return f"<int of {x.bit_length()} bits>"
        return super().repr_int(x, level)

    def repr_instance(self, x: Any, level: int) -> str:
        try:
            return super().repr_instance(x, level)
        except Exception:
            return f"<{type(x).__name__}>"


_SHOWN = _Shown(Masker())


def shown(value: Any) -> str:
    """``value`` as an error message may echo it: short, secrets masked.

    >>> shown([{"password": "hunter2", "user": "ada"}])
    "[{'password': '***', 'user': 'ada'}]"
    >>> shown(2 ** 400), shown("password: hunter2")
    ('<int of 401 bits>', "'password: ***'")
    >>> len(shown("x" * 1000))
    60
    """
    return _SHOWN.repr(value)


def described(exc: BaseException) -> str:
    """``Type: message`` of an exception raised by someone else's code, on one line,
    however odd its ``__str__`` (one that raises, or a message of many lines).

    >>> described(ValueError("bad\\nvalue"))
    'ValueError: bad value'
    """
    try:
        message = mask_text(" ".join(str(exc).split("\n")))
    except Exception:
        message = "<unprintable>"
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__
