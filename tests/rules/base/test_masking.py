"""Secrets kept out of logs and messages: keys, inline text, odd values."""

from __future__ import annotations

import pytest

from buddy.engine import Approval, Engine
from buddy.rules.base import Masker, described, mask_text, shown
from tests.helpers import ManualClock


class TestKeys:
    @pytest.mark.parametrize("key", ["pwd", "Bearer", ("password", "x"), ("a", "api_key")])
    def test_more_secret_keys(self, key):
        assert Masker().mask({key: "v", "plain": "w"}) == {key: "***", "plain": "w"}

    def test_shown_masks_a_tuple_key_naming_a_secret(self):
        assert shown({("password", "x"): "hunter2"}) == "{('password', 'x'): '***'}"


class TestInlineText:
    @pytest.mark.parametrize(("text", "masked"), [
        ("password: hunter2", "password: ***"),
        ("login failed: api_key=sk-live-1 rejected", "login failed: api_key=***"),
        ("Authorization: Bearer abc.def", "Authorization: ***"),
        ("header was Bearer abc.def", "header was Bearer ***"),
        ("PWD=x", "PWD=***"),
        ("unknown tool token_exchange", "unknown tool token_exchange"),
        ("no secret here: 42", "no secret here: 42"),
    ])
    def test_what_follows_a_secret_word_is_cut(self, text, masked):
        assert mask_text(text) == masked

    def test_shown_and_described_mask_inline(self):
        assert shown("password: hunter2") == "'password: ***'"
        assert described(ValueError("bad password=hunter2\nretry")) == \
            "ValueError: bad password=***"


class TestInTheLog:
    def test_a_handler_error_naming_a_secret_is_masked(self):
        engine = Engine.default(clock=ManualClock())

        def fails(args):
            raise PermissionError("login refused for password=hunter2")

        engine.register_handler("form_fill", live=fails)
        result = engine.execute("a", "form_fill", {}, confidence=0.9)
        assert result.error == "PermissionError: login refused for password=***"
        assert "hunter2" not in "\n".join(engine.audit.lines())

    def test_an_approvers_reason_naming_a_secret_is_masked(self):
        engine = Engine.default(clock=ManualClock(), approver=lambda request: Approval.edit(
            {"to": "ok@example.com"}, reason="approved with token: abc123"))
        engine.register_handler("msgraph_send_email", live=lambda args: "sent")
        assert engine.execute("a", "msgraph_send_email", {"to": "x@example.com"},
                              confidence=0.9).ok
        assert "abc123" not in "\n".join(engine.audit.lines())
