"""Values JSON has no form for (models, records, sets, dates, ...) are written as JSON and
masked by field name, as dict keys are; hostile ones never break the log."""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import json
import pathlib
import typing
import uuid
import weakref
from typing import Any, NamedTuple

import attrs
import pydantic
import pydantic.v1
import pytest

from buddy.engine import AuditLog, Engine
from buddy.engine.core._replay import replay
from buddy.rules.base import Masker
from tests.helpers import ManualClock


class Inner(pydantic.BaseModel):
    api_key: str
    when: datetime.datetime


class Reply(pydantic.BaseModel):
    user: str
    inner: Inner
    tags: set[str]
    password: pydantic.SecretStr
    token_hint: str = "none"


class OldReply(pydantic.v1.BaseModel):
    user: str
    password: str


@dataclasses.dataclass
class Login:
    user: str
    password: str
    extra: Any = None


@attrs.frozen
class Creds:
    name: str
    client_secret: str
    scopes: frozenset[str]


class Point(NamedTuple):
    x: int
    api_key: str


class Colour(enum.Enum):
    RED = "red"
    PAIR = (1, 2)


class Level(enum.IntEnum):
    HIGH = 3


def reply() -> Reply:
    return Reply(user="ada", inner=Inner(api_key="sk-1", when=datetime.datetime(2024, 1, 2, 3)),
                 tags={"b", "a"}, password=pydantic.SecretStr("hunter2"))


class TestWrittenByField:
    def test_a_pydantic_model_is_its_fields_masked_by_name(self):
        assert Masker().mask(reply()) == {
            "user": "ada", "inner": {"api_key": "***", "when": "2024-01-02T03:00:00"},
            "tags": ["a", "b"], "password": "***", "token_hint": "***"}

    def test_a_pydantic_v1_model_by_its_dict(self):
        assert Masker().mask(OldReply(user="ada", password="hunter2")) == \
            {"user": "ada", "password": "***"}

    def test_a_root_model_is_its_root(self):
        assert Masker().mask(pydantic.RootModel[list[int]]([3, 1])) == [3, 1]

    def test_a_dataclass_attrs_instance_and_named_tuple(self):
        masked = Masker().mask([Login("ada", "hunter2", extra=Point(1, "k")),
                                Creds("c", "s3", frozenset({"write", "read"}))])
        assert masked == [
            {"user": "ada", "password": "***", "extra": {"x": 1, "api_key": "***"}},
            {"name": "c", "client_secret": "***", "scopes": ["read", "write"]}]

    def test_extra_secret_keys_apply_to_fields(self):
        ssn = dataclasses.make_dataclass("Person", ["name", "ssn"])
        assert Masker(extra_keys=["ssn"]).mask(ssn("ada", "123-45")) == \
            {"name": "ada", "ssn": "***"}

    @pytest.mark.parametrize(("value", "written"), [
        (Colour.RED, "red"),
        (Colour.PAIR, [1, 2]),
        (Level.HIGH, 3),
        ({3, 1, 2}, [1, 2, 3]),
        (frozenset({"b", "a"}), ["a", "b"]),
        ((1, (2, 3)), [1, [2, 3]]),
        (datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC),
         "2024-05-06T07:08:09+00:00"),
        (datetime.date(2024, 5, 6), "2024-05-06"),
        (datetime.time(7, 8), "07:08:00"),
        (datetime.timedelta(seconds=90), "0:01:30"),
        (uuid.UUID(int=1), "00000000-0000-0000-0000-000000000001"),
        (decimal.Decimal("1.10"), "1.10"),
        (pathlib.PurePosixPath("/srv/report.pdf"), "/srv/report.pdf"),
        (b"ok", "ok"),
        (bytearray(b"\xff"), "\\xff"),
        (b"login password=hunter2", "login password=***"),
    ], ids=["enum", "enum-tuple", "int-enum", "set", "frozenset", "tuple", "datetime", "date",
            "time", "timedelta", "uuid", "decimal", "path", "bytes", "bytes-not-utf8",
            "bytes-secret"])
    def test_json_forms(self, value, written):
        masked = Masker().mask({"v": value})
        assert masked == {"v": written}
        assert type(masked["v"]) is type(written)

    def test_subclasses_of_json_scalars_become_the_scalar(self):
        class Name(str):
            def __str__(self):
                raise RuntimeError("never called")

        class Count(int):
            pass

        masked = Masker().mask([Name("ada"), Count(3), Count(2 ** 70)])
        assert masked == ["ada", 3, 2 ** 70]
        assert [type(v) for v in masked] == [str, int, int]

    def test_an_unsortable_set_is_a_list_of_its_items(self):
        masked = Masker().mask({1, "a", None})
        assert sorted(map(str, masked)) == ["1", "None", "a"]

    def test_a_shared_value_is_no_cycle(self):
        shared = Login("ada", "x")
        masked = Masker().mask([shared, shared, {"k": shared}])
        assert masked == [{"user": "ada", "password": "***", "extra": None}] * 2 + [
            {"k": {"user": "ada", "password": "***", "extra": None}}]

    def test_many_models_made_on_the_way_are_no_cycle(self):
        # model_dump makes new dicts; one freed on the way must not be taken for an
        # open container when another is made at its address
        masked = Masker().mask([reply() for _ in range(300)])
        assert "<cycle>" not in json.dumps(masked)
        assert masked[-1]["inner"] == {"api_key": "***", "when": "2024-01-02T03:00:00"}

    def test_a_value_made_on_the_way_stays_alive_while_its_children_are_walked(self):
        # Else another value made later could take its id and be taken for a cycle.
        class Tracked(dict):
            pass

        seen: dict[str, Any] = {}

        class Check:
            def model_dump(self, mode="python"):
                seen["alive"] = seen["inner"]() is not None
                return {"ok": True}

        class Probe:
            def model_dump(self, mode="python"):
                inner = Tracked(child=Check())
                seen["inner"] = weakref.ref(inner)
                return Tracked(inner=inner)

        assert Masker().mask(Probe()) == {"inner": {"child": {"ok": True}}}
        assert seen["alive"] is True

    def test_an_unknown_object_is_its_masked_repr(self):
        class Opaque:
            def __repr__(self):
                return "Opaque(token=abc)"

        assert Masker().mask({"v": Opaque()}) == {"v": "Opaque(token=***"}


class Boom(Exception):
    pass


class TestHostile:
    def test_a_dataclass_holding_itself(self):
        login = Login("ada", "x")
        login.extra = login
        assert Masker().mask(login) == {"user": "ada", "password": "***", "extra": "<cycle>"}

    def test_a_model_holding_itself(self):
        class Loop(pydantic.BaseModel):
            other: typing.Any = None

        loop = Loop()
        loop.other = loop
        assert "<cycle>" in json.dumps(Masker().mask(loop))

    def test_records_nested_deeper_than_the_stack(self):
        value: Any = None
        for i in range(20_000):
            value = Login(str(i), "x", value)
        masked, depth = Masker().mask(value), 0
        while masked is not None:
            assert masked["password"] == "***"
            masked, depth = masked["extra"], depth + 1
        assert depth == 20_000

    def test_a_model_dump_that_raises_is_the_masked_repr(self):
        class Bad(pydantic.BaseModel):
            user: str
            password: str

            def model_dump(self, **kwargs):
                raise Boom("no")

        assert Masker().mask({"r": Bad(user="ada", password="hunter2")}) == \
            {"r": "Bad(user='ada', password=***"}

    def test_a_property_that_raises_and_a_repr_that_raises(self):
        @dataclasses.dataclass
        class Broken:
            a: int

            def __repr__(self):
                raise Boom("no repr either")

        broken = Broken(1)
        object.__delattr__(broken, "a")  # the field is gone: reading it raises
        assert Masker().mask({"r": broken, "ok": 1}) == {"r": "<Broken>", "ok": 1}

    def test_an_attrs_field_that_raises(self):
        @attrs.define
        class Lazy:
            password: str
            n: int = attrs.field(init=False)  # never set: reading it raises

        assert Masker().mask(Lazy("hunter2")) == "Lazy(password=***"

    def test_values_whose_eq_hash_and_order_raise(self):
        class Nasty:
            def __init__(self, n):
                self.n = n

            def __eq__(self, other):
                raise Boom("eq")

            def __lt__(self, other):
                raise Boom("lt")

            def __hash__(self):
                return self.n

            def __repr__(self):
                return f"Nasty({self.n})"

        class Unhashable:
            __hash__ = None  # type: ignore[assignment]

            def __eq__(self, other):
                raise Boom("eq")

            def __repr__(self):
                return "Unhashable()"

        masked = Masker().mask({"s": {Nasty(1), Nasty(2)}, "l": [Unhashable()],
                                "r": Login("ada", "x", Nasty(3))})
        assert sorted(masked["s"]) == ["Nasty(1)", "Nasty(2)"]
        assert masked["l"] == ["Unhashable()"]
        assert masked["r"] == {"user": "ada", "password": "***", "extra": "Nasty(3)"}

    def test_a_mapping_whose_items_raise(self):
        class Odd(dict):
            def items(self):
                raise Boom("items")

            def __repr__(self):
                return "Odd(password=hunter2)"

        assert Masker().mask({"v": Odd(a=1)}) == {"v": "Odd(password=***"}

    def test_a_key_whose_class_raises_leaves_the_whole_value_as_text(self):
        class Key:
            @property
            def __class__(self):
                raise Boom("class")

            def __repr__(self):
                return "Key()"

        assert Masker().mask({Key(): [1]}) == "{Key(): [1]}"

    def test_a_model_whose_dump_keeps_turning(self):
        class Loop(pydantic.BaseModel):
            def model_dump(self, **kwargs):
                return self

            def __repr__(self):
                return "Loop(api_key=x)"

        assert Masker().mask([Loop()]) == ["Loop(api_key=***"]


def executed(result: object, tmp_path=None) -> tuple[Engine, dict[str, Any]]:
    """An engine that ran form_fill LIVE returning ``result``, and the run's event data."""
    audit = AuditLog.open(tmp_path / "audit.jsonl", clock=ManualClock()) if tmp_path \
        else AuditLog.memory(clock=ManualClock())
    engine = Engine.default(clock=ManualClock(), audit=audit)
    engine.register_handler("form_fill", live=lambda args: result)
    run = engine.execute("a", "form_fill", {"login": Login("ada", "hunter2")}, confidence=0.95)
    assert run.ok and run.result is result
    event = next(e for e in engine.audit.records() if e["kind"] == "execution")
    return engine, event["data"]


class TestThroughTheEngine:
    def test_a_model_result_is_recorded_by_field_and_replays(self, tmp_path):
        engine, data = executed(reply(), tmp_path)
        assert data["mode"] == "LIVE"
        assert data["result"] == {
            "user": "ada", "inner": {"api_key": "***", "when": "2024-01-02T03:00:00"},
            "tags": ["a", "b"], "password": "***", "token_hint": "***"}
        assert data["args"] == {"login": {"user": "ada", "password": "***", "extra": None}}
        engine.audit.close()
        text = (tmp_path / "audit.jsonl").read_text()
        assert "hunter2" not in text and "sk-1" not in text
        report = replay(tmp_path / "audit.jsonl")
        assert report.ok and report.replayed == report.events

    @pytest.mark.parametrize(("result", "recorded"), [
        (Login("ada", 2 ** 70), {"user": "ada", "password": "***", "extra": None}),
        (Login("ada\ud800", "x"),
         {"$unencodable": "dict", "repr": "{'user': 'ada\\ud800', 'password': '***', "
                                          "'extra': None}"}),
        (Login("ada", "x", 2 ** 70),
         {"$unencodable": "dict", "repr": "{'user': 'ada', 'password': '***', "
                                          "'extra': 1180591620717411303424}"}),
    ], ids=["huge-int-masked", "lone-surrogate", "huge-int"])
    def test_what_json_cannot_hold_is_recorded_as_today(self, result, recorded):
        engine, data = executed(result)
        assert data["ok"] is True and data["result"] == recorded
        assert replay(engine.audit).ok
