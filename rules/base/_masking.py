"""Secrets kept out of logs and messages: :class:`Masker`, :func:`shown`, :func:`mask_text`.

Data (arguments, results) is masked by key: the value of a secret-looking key
is written ``***``. Free text that echoes a value (an error message, an
approver's reason) is masked inline: what follows a secret-looking word and a
separator (``password: hunter2``, ``api_key=sk-1``, ``Bearer abc``) is cut.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import re
import reprlib
import uuid
from collections.abc import Iterable, Mapping
from pathlib import PurePath
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

# Values JSON holds as they are: exact types only (a subclass may behave otherwise).
_LEAVES = frozenset({str, int, float, bool, type(None)})
#: How many keys a :class:`Masker` remembers the verdict of before it starts over.
_KEYS_KEPT = 4096
#: How many times a value may turn into another before it is JSON (an Enum's value, a
#: pydantic RootModel's dump); one that keeps turning is recorded as text.
_HOPS = 8
_TEXT = (uuid.UUID, decimal.Decimal, datetime.timedelta)  # written as str()
_ISO = (datetime.date, datetime.time)                       # datetime too: isoformat()


def _text(value: object) -> str:
    """``value`` as text a log can hold: its masked repr, or ``<TypeName>`` when even
    that fails (a ``__repr__`` that raises, a structure too deep to print)."""
    try:
        return masked_repr(value)
    except Exception:
        return f"<{type(value).__name__}>"


def _listed(items: set[Any] | frozenset[Any]) -> list[Any]:
    """A set's items as a list: sorted when they have an order, else as iterated."""
    out = list(items)
    try:
        out.sort()
    except Exception:  # items with no order (or an order that raises)
        pass
    return out


def _step(value: Any) -> Any:
    """What ``value`` (not a plain dict, list or JSON scalar) is written as, one step on:
    a model, record or mapping as a dict of its fields, a tuple or set as a list, an
    Enum as its value, a date, UUID, path or bytes as text; anything else as its masked
    repr. The result may need another step (an Enum's value)."""
    kind = type(value)
    if kind is tuple or kind is set or kind is frozenset:  # the common ones, at once
        return list(value) if kind is tuple else _listed(value)
    if isinstance(value, enum.Enum):
        return value.value
    dump = getattr(kind, "model_dump", None)  # pydantic v2, duck-typed
    if dump is not None:
        return value.model_dump(mode="python")
    if hasattr(kind, "__fields__") and callable(getattr(kind, "dict", None)):  # pydantic v1
        return value.dict()
    attributes = getattr(kind, "__attrs_attrs__", None)
    if attributes is not None:
        return {a.name: getattr(value, a.name) for a in attributes}
    if hasattr(kind, "__dataclass_fields__"):  # by field, no deep copy (not asdict)
        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return dict(value.items())
    if isinstance(value, tuple):
        names = getattr(kind, "_fields", None)  # a NamedTuple: by field name
        if type(names) is tuple and len(names) == len(value) and \
                all(type(n) is str for n in names):
            return dict(zip(names, value, strict=True))
        return list(value)
    if isinstance(value, list):
        return list(value)
    if isinstance(value, (set, frozenset)):
        return _listed(value)
    # Subclasses of JSON's scalars, as the scalar (no method of theirs called).
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__index__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, (bytes, bytearray)):  # text, secrets cut as its repr's were
        return mask_text(bytes(value).decode("utf-8", "backslashreplace"))
    if isinstance(value, _ISO):
        return value.isoformat()
    if isinstance(value, _TEXT):
        return str(value)
    if isinstance(value, PurePath):
        return mask_text(str(value))
    return _text(value)


def _plain(value: Any) -> Any:
    """``value`` (not a plain dict, list or JSON scalar) as a plain dict or list to walk,
    or as a JSON scalar; its masked repr when turning it fails (a ``model_dump`` or a
    property that raises, a value that keeps turning)."""
    try:
        out = value
        for _ in range(_HOPS):
            out = _step(out)
            kind = type(out)
            if kind is dict or kind is list or kind in _LEAVES:
                return out
    except Exception:
        pass
    return _text(value)


class Masker:
    """Replaces the values of secret-looking keys with ``"***"``, at any depth.

    What JSON has no form for is written as JSON first, and masked the same way:
    a pydantic model (``model_dump``, or v1's ``dict()``), a dataclass, an attrs
    instance or a NamedTuple as a dict of its fields by name; a tuple, set or
    frozenset as a list (a set sorted when its items have an order); an Enum as
    its value; a date, time, UUID, Decimal or path as text; bytes as text with
    secrets cut (:func:`mask_text`). A value that cannot be written so (a
    ``model_dump`` that raises) is written as its masked repr.

    Walks without recursion, so arguments nested thousands deep are masked
    like any others; a container holding itself is written ``"<cycle>"``.
    Never raises: on any failure the whole value is written as its masked repr.

    >>> Masker().mask({"to": "a@b.c", "api_key": "sk-1", "nested": [{"Password": "x"}]})
    {'to': 'a@b.c', 'api_key': '***', 'nested': [{'Password': '***'}]}
    >>> import dataclasses
    >>> Login = dataclasses.make_dataclass("Login", ["user", "password", "tags"])
    >>> Masker().mask(Login("ada", "hunter2", {"b", "a"}))
    {'user': 'ada', 'password': '***', 'tags': ['a', 'b']}
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
        """A JSON copy of ``value`` (mappings and records as dicts, sequences and sets
        as lists, see the class) with secrets masked."""
        kind = type(value)
        if kind in _LEAVES:
            return value
        try:
            if kind is dict:  # the common case, a flat dict of plain values, without the walk
                # Its keys all known to name no secret, its values all scalars: a copy,
                # checked in C.
                if self._plain.issuperset(value) and \
                        _LEAVES.issuperset(map(type, value.values())):
                    return dict(value)
                known, mask = self._keys, self.MASK
                flat: dict[Any, Any] = {}
                for k, v in value.items():
                    if type(v) not in _LEAVES:
                        break
                    secret = known.get(k) if type(k) is str else None
                    flat[k] = mask if (self.is_secret(k) if secret is None else secret) else v
                else:
                    return flat
            return self._walk(value)
        except Exception:  # a mapping whose items() raise, a key whose __eq__ does, ...
            return _text(value)

    def _walk(self, value: Any) -> Any:
        """:meth:`mask` of any value, walked with a stack."""
        is_secret, mask, leaves = self.is_secret, self.MASK, _LEAVES
        root: list[Any] = [None]
        # The containers on the current path, by id (cycle check), each kept alive
        # while there so that its id is not reused by a value made on the way.
        open_: dict[int, Any] = {}
        # Work items: (source, destination, key in destination), or (id, None, None) to
        # close a container once its children are done.
        stack: list[tuple[Any, Any, Any]] = [(value, root, 0)]
        while stack:
            src, dest, key = stack.pop()
            if dest is None:
                del open_[src]
                continue
            kind = type(src)
            node = src if kind is dict or kind is list else _plain(src)
            kind = type(node)
            if kind is not dict and kind is not list:
                dest[key] = node
                continue
            if id(src) in open_:
                dest[key] = "<cycle>"
                continue
            open_[id(src)] = src
            stack.append((id(src), None, None))
            out: Any
            if kind is dict:
                out = {}
                for k, v in node.items():
                    if is_secret(k):
                        out[k] = mask
                    elif type(v) in leaves:
                        out[k] = v
                    else:
                        out[k] = None
                        stack.append((v, out, k))
            else:
                out = list(node)
                for i, v in enumerate(out):
                    if type(v) not in leaves:
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
