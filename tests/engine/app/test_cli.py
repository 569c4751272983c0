"""Tests of buddy.engine.app._cli: the ``buddy`` command line, run in-process through ``main``.

Every test runs in its own temporary directory (``in_tmp``) and names files
relatively, so error messages are pinned exactly. One test runs the installed
``buddy`` entry point in a subprocess.
"""

from __future__ import annotations

import gc
import hashlib
import json
import re
import subprocess
import sys
import time
import warnings
from importlib import resources
from pathlib import Path

import click
import pytest

from buddy.engine.app._cli import cli, main
from buddy.engine.core._audit import AuditLog
from buddy.engine.core._engine import Engine

README = Path(__file__).resolve().parents[3] / "README.md"
SHIPPED_RULES = resources.files("buddy.rules").joinpath("escalation.toml").read_text("utf-8")
SHIPPED_TOOLS = resources.files("buddy.rules").joinpath("tools.toml").read_text("utf-8")

RISKS = {
    "vision_inspect": "LOW", "screenshot_capture": "LOW", "memory_search": "LOW",
    "goal_query": "LOW", "text_extract": "LOW", "math_compute": "LOW", "ghl_search": "LOW",
    "mployer_search": "LOW", "msgraph_get_user": "LOW",
    "form_fill": "MEDIUM", "button_click": "MEDIUM", "ghl_create_contact": "MEDIUM",
    "ghl_update_contact": "MEDIUM", "mployer_add_contact": "MEDIUM",
    "msgraph_create_draft": "MEDIUM",
    "msgraph_send_email": "HIGH", "file_operation": "HIGH", "database_write": "HIGH",
}


@pytest.fixture(autouse=True)
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BUDDY_TEST_KEY", raising=False)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def ok(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    code, out, err = run(capsys, *argv)
    assert (code, err) == (0, ""), (code, out, err)
    return out


def fails(capsys: pytest.CaptureFixture[str], *argv: object, code: int = 1,
          stdout: str = "") -> str:
    """Run a failing command; return its single stderr line."""
    got, out, err = run(capsys, *argv)
    assert got == code, (got, out, err)
    assert "Traceback" not in err
    assert err.endswith("\n") and err.count("\n") == 1, err
    if stdout is not None:
        assert out == stdout
    return err.rstrip("\n")


def line_of(text: str, needle: str, nth: int = 0) -> int:
    """1-based line number of the nth line of ``text`` containing ``needle``."""
    hits = [n for n, line in enumerate(text.splitlines(), 1) if needle in line]
    return hits[nth]


def decide_json(capsys: pytest.CaptureFixture[str], *argv: object) -> dict:
    return json.loads(ok(capsys, "decide", *argv, "--json"))


def audited(capsys: pytest.CaptureFixture[str], log: str, *decisions: tuple[object, ...]) -> None:
    for argv in decisions:
        ok(capsys, "decide", *argv, "--audit", log, "--json")


def lock_log(path: str, reason: str = "incident 42") -> None:
    """Lock the system of the log at ``path`` (made if missing) as an embedding engine does."""
    with AuditLog.open(path, clock=time.time) as audit:
        Engine.default(audit=audit).lock(reason)


def log_files(path: str) -> tuple[bytes, bytes]:
    return Path(path).read_bytes(), Path(path + ".anchor").read_bytes()


def rechain(lines: list[str]) -> list[str]:
    """Recompute prev/hash (plain SHA-256) of every line: a forger without a key."""
    out, prev = [], "0" * 64
    for line in lines:
        body = line[: -len(',"hash":"') - 66] + "}" if '"hash":"' in line else line
        body = re.sub(r',"prev":"[0-9a-f]{64}"\}$', f',"prev":"{prev}"}}', body)
        prev = hashlib.sha256(body.encode()).hexdigest()
        out.append(f'{body[:-1]},"hash":"{prev}"}}')
    return out


# -- help ---------------------------------------------------------------------

class TestHelp:
    @pytest.mark.parametrize(("argv", "mentions"), [
        ((), ("decide", "tools", "replay", "graph", "--version")),
        (("decide",), ("TOOL", "--confidence", "--agent", "--approve / --deny", "--locked",
                       "--audit", "--allow-missing-anchor", "--key-file", "--key-env",
                       "--catalogue", "--rules", "--json")),
        (("tools",), ("--risk", "LOW|MEDIUM|HIGH", "--catalogue", "--json")),
        (("replay",), ("LOG", "--until", "--states", "--rules", "--fail-on-loosening",
                       "--no-anchor", "--key-file", "--key-env", "--json")),
        (("run",), ("--plans", "--out", "--seed", "--dry-run-only", "--max-live",
                    "--live-floor", "--plans-per-cycle", "--start", "--key-file", "--key-env",
                    "--catalogue", "--rules")),
        (("run", "waves"), ("--tasks", "--schedule", "--strict", "--out", "--agents",
                             "--waves", "--tasks-per-wave", "--strategy", "--retry",
                             "--max-retries", "--timeout", "--max-parallel", "--backend",
                             "--seed", "--start", "--dry-run-only", "--rules")),
        (("graph",), ("machine", "tools")),
        (("graph", "machine"), ("NAME", "--format", "mermaid|dot|png|svg", "--output", "-o")),
        (("graph", "tools"), ("--format", "mermaid|dot|png|svg", "--output", "-o",
                              "--catalogue")),
    ])
    @pytest.mark.parametrize("flag", ["--help", "-h"])
    def test_every_command_has_help(self, capsys, argv, mentions, flag) -> None:
        out = ok(capsys, *argv, flag)
        assert out.startswith(f"Usage: buddy {' '.join(argv)}".rstrip() + " [OPTIONS]")
        for word in mentions:
            assert word in out, word

    def test_the_readme_synopsis_names_every_option(self) -> None:
        # It had gone stale: no --no-anchor, --json, --start, --catalogue, png|svg, -o, ...
        text = README.read_text(encoding="utf-8")
        block = re.search(r"```text\n(.*?)```", text[text.index("## CLI\n"):], re.S)
        assert block is not None
        synopses: dict[str, str] = {}
        for line in block.group(1).splitlines():
            head = re.match(r"buddy ((?:graph |tickets |run (?=waves))?\w+) ", line)
            if head:
                name = head.group(1)
            synopses[name] = synopses.get(name, "") + " " + line
        commands = {f"{group} {sub}" if group != "-" else sub: command
                    for group, sub, command in _commands()}
        assert sorted(synopses) == sorted(commands)
        for name, command in commands.items():
            for option in (p for p in command.params if isinstance(p, click.Option)):
                for flag in (*option.opts, *option.secondary_opts):
                    if flag not in ("-c", "-a"):  # short for --confidence and --agent
                        assert re.search(rf"[\[| ]{re.escape(flag)}[\] |]", synopses[name]), \
                            (name, flag)
                if isinstance(option.type, click.Choice):
                    assert "|".join(option.type.choices) in synopses[name], (name, option.name)

    def test_version(self, capsys) -> None:
        assert ok(capsys, "--version") == "buddy, version 0.1.0\n"

    @pytest.mark.parametrize("argv", [(), ("graph",)])
    def test_bare_group_shows_help_not_an_error_name(self, capsys, argv) -> None:
        # `buddy` alone prints its usage; it must not read as a failure named
        # NoArgsIsHelpError (click's internal exception).
        code, out, err = run(capsys, *argv)
        assert code == 2
        assert "Commands:" in out + err
        assert "NoArgsIsHelpError" not in out + err


def _commands():
    """(group or "-", name, command) of every buddy command."""
    for name, command in cli.commands.items():
        if isinstance(command, click.Group):
            if command.invoke_without_command:  # `buddy run` runs, `buddy run waves` too
                yield "-", name, command
            for sub, subcommand in command.commands.items():
                yield name, sub, subcommand
        else:
            yield "-", name, command


# -- tools ----------------------------------------------------------------------

class TestTools:
    def test_table_lists_18_tools(self, capsys) -> None:
        out = ok(capsys, "tools")
        assert "18 tools" in out
        for name in RISKS:
            assert name in out

    def test_json_names_and_risks(self, capsys) -> None:
        rows = json.loads(ok(capsys, "tools", "--json"))
        assert {r["name"]: r["risk"] for r in rows} == RISKS
        assert len(rows) == 18
        assert {r["name"] for r in rows if r["requires_approval"]} == \
            {n for n, risk in RISKS.items() if risk == "HIGH"}

    @pytest.mark.parametrize("risk", ["LOW", "MEDIUM", "HIGH"])
    def test_risk_filter(self, capsys, risk) -> None:
        rows = json.loads(ok(capsys, "tools", "--risk", risk, "--json"))
        assert sorted(r["name"] for r in rows) == sorted(n for n, r in RISKS.items() if r == risk)

    @pytest.mark.parametrize("given", ["high", "High", "HIGH"])
    def test_risk_filter_ignores_case(self, capsys, given) -> None:
        # `--risk high` was refused ('high' is not one of 'LOW', 'MEDIUM', 'HIGH').
        rows = json.loads(ok(capsys, "tools", "--risk", given, "--json"))
        assert sorted(r["name"] for r in rows) == \
            ["database_write", "file_operation", "msgraph_send_email"]
        assert "3 tools" in ok(capsys, "tools", "--risk", given)

    def test_an_unknown_risk_is_a_usage_error(self, capsys) -> None:
        assert fails(capsys, "tools", "--risk", "severe", code=2) == \
            "BadParameter: Invalid value for '--risk': 'severe' is not one of 'LOW', " \
            "'MEDIUM', 'HIGH'."

    def test_catalogue_file(self, capsys) -> None:
        Path("mine.toml").write_text(SHIPPED_TOOLS, encoding="utf-8")
        rows = json.loads(ok(capsys, "tools", "--catalogue", "mine.toml", "--json"))
        assert len(rows) == 18


# -- decide -------------------------------------------------------------------

class TestDecide:
    @pytest.mark.parametrize(("tool", "confidence", "mode", "rule", "state"), [
        ("vision_inspect", 0.0, "MOCK", "low.dry_run", "MOCK"),
        ("vision_inspect", 0.49, "MOCK", "low.dry_run", "MOCK"),
        ("vision_inspect", 0.50, "DRY_RUN", "low.live", "DRY_RUN"),
        ("vision_inspect", 0.69, "DRY_RUN", "low.live", "DRY_RUN"),
        ("vision_inspect", 0.70, "LIVE", "low.live", "LIVE"),
        ("vision_inspect", 1.0, "LIVE", "low.live", "LIVE"),
        ("form_fill", 0.64, "MOCK", "medium.dry_run", "MOCK"),
        ("form_fill", 0.65, "DRY_RUN", "medium.live", "DRY_RUN"),
        ("form_fill", 0.79, "DRY_RUN", "medium.live", "DRY_RUN"),
        ("form_fill", 0.80, "LIVE", "medium.live", "LIVE"),
        ("msgraph_send_email", 0.79, "MOCK", "high.dry_run", "MOCK"),
        ("msgraph_send_email", 0.80, "DRY_RUN", "high.live", "DRY_RUN"),
        ("msgraph_send_email", 0.84, "DRY_RUN", "high.live", "DRY_RUN"),
        # At the LIVE threshold without an answer: waits, runs as DRY_RUN.
        ("msgraph_send_email", 0.85, "DRY_RUN", "high.live", "AWAITING_APPROVAL"),
        ("database_write", 1.0, "DRY_RUN", "high.live", "AWAITING_APPROVAL"),
    ])
    def test_thresholds(self, capsys, tool, confidence, mode, rule, state) -> None:
        got = decide_json(capsys, tool, "--confidence", confidence)
        assert got == {"tool": tool, "agent": "cli", "confidence": confidence, "mode": mode,
                       "allowed": True, "rule": rule, "reason": got["reason"], "state": state}
        assert got["reason"].startswith(f"{RISKS[tool]} risk: ")

    @pytest.mark.parametrize(("confidence", "answer", "mode", "allowed", "rule", "state"), [
        (0.85, "--approve", "LIVE", True, "high.live", "LIVE"),
        (1.0, "--approve", "LIVE", True, "high.live", "LIVE"),
        (0.85, "--deny", "MOCK", False, "approval.denied", "LOCKED"),
        # An approval does not lower the confidence bar.
        (0.84, "--approve", "DRY_RUN", True, "high.live", "DRY_RUN"),
        (0.79, "--approve", "MOCK", True, "high.dry_run", "MOCK"),
    ])
    def test_high_risk_approval(self, capsys, confidence, answer, mode, allowed, rule,
                                state) -> None:
        got = decide_json(capsys, "msgraph_send_email", "-c", confidence, answer)
        assert (got["mode"], got["allowed"], got["rule"], got["state"]) == \
            (mode, allowed, rule, state)

    def test_deny_reason(self, capsys) -> None:
        got = decide_json(capsys, "msgraph_send_email", "-c", 0.9, "--deny")
        assert got["reason"] == "HIGH risk: approval denied; the call is halted"

    @pytest.mark.parametrize(("tool", "extra"), [
        ("vision_inspect", ()), ("form_fill", ()), ("msgraph_send_email", ("--approve",)),
    ])
    def test_locked_gives_mock(self, capsys, tool, extra) -> None:
        got = decide_json(capsys, tool, "-c", 1.0, "--locked", *extra)
        assert (got["mode"], got["allowed"], got["rule"], got["state"]) == \
            ("MOCK", True, "system.lock", "LOCKED")

    LOCKED_AUDIT = ("UsageError: --locked is a what-if (decide as if the system were locked) "
                    "and cannot go with --audit: a log's system lock is real, honoured by "
                    "every writer of the log")

    def test_locked_with_a_log_is_a_usage_error(self, capsys) -> None:
        assert fails(capsys, "decide", "form_fill", "-c", "0.9", "--locked", "--audit",
                     "a.jsonl", code=2) == self.LOCKED_AUDIT
        assert sorted(p.name for p in Path().iterdir()) == []

    @pytest.mark.parametrize("locked", [True, False])
    def test_locked_leaves_a_log_as_it_was(self, capsys, locked) -> None:
        # It wrote lock, the decision, then unlock into the log: that unlock lifted an
        # incident's lock, and on an unlocked log the lock briefly held every other writer.
        if locked:
            lock_log("a.jsonl")
        else:
            audited(capsys, "a.jsonl", ("form_fill", "-c", "0.9"))
        before = log_files("a.jsonl")
        assert fails(capsys, "decide", "form_fill", "-c", "0.9", "--locked", "--audit",
                     "a.jsonl", code=2) == self.LOCKED_AUDIT
        assert log_files("a.jsonl") == before
        got = decide_json(capsys, "form_fill", "-c", "0.9", "--audit", "a.jsonl")
        assert (got["mode"], got["rule"]) == (("MOCK", "system.lock") if locked else
                                              ("LIVE", "medium.live"))

    def test_agent_is_reported(self, capsys) -> None:
        assert decide_json(capsys, "form_fill", "-c", 0.9, "-a", "agent-7")["agent"] == "agent-7"

    def test_table_output(self, capsys) -> None:
        out = ok(capsys, "decide", "form_fill", "--confidence", "0.9")
        assert out.splitlines()[0] == \
            "form_fill (MEDIUM risk, reversible) for agent cli at confidence 0.9"
        assert re.search(r"^mode\s+LIVE\s*$", out, re.MULTILINE)
        assert re.search(r"^rule\s+medium\.live\s*$", out, re.MULTILINE)

    def test_rules_dir(self, capsys) -> None:
        Path("rules").mkdir()
        Path("rules/escalation.toml").write_text(_lowered_medium_live(), encoding="utf-8")
        assert decide_json(capsys, "form_fill", "-c", 0.7, "--rules", "rules")["mode"] == "LIVE"


# -- bad input: one line, no traceback, non-zero ------------------------------

class TestBadInput:
    def test_unknown_tool(self, capsys) -> None:
        assert fails(capsys, "decide", "no_such_tool", "-c", "0.9", code=2) == \
            "UnknownToolError: unknown tool 'no_such_tool' (see `buddy tools`)"

    @pytest.mark.parametrize("value", ["1.5", "-0.1", "nan", "NaN", "abc", "inf", "", "1.0001"])
    def test_bad_confidence(self, capsys, value) -> None:
        assert fails(capsys, "decide", "form_fill", f"--confidence={value}", code=2) == \
            "BadParameter: Invalid value for '--confidence' / '-c': must be a number in " \
            f"[0, 1] (got {value!r})"

    def test_missing_confidence(self, capsys) -> None:
        assert fails(capsys, "decide", "form_fill", code=2) == \
            "MissingParameter: Missing option '--confidence' / '-c'."

    @pytest.mark.parametrize(("argv", "line"), [
        (("frobnicate",), "NoSuchCommand: No such command 'frobnicate'."),
        (("decide", "form_fill", "-c", "0.5", "--bogus"),
         "NoSuchOption: No such option '--bogus'."),
        (("tools", "--risk", "BOGUS"),
         "BadParameter: Invalid value for '--risk': 'BOGUS' is not one of 'LOW', 'MEDIUM', "
         "'HIGH'."),
        (("replay", "x.jsonl", "--until", "-1"),
         "BadParameter: Invalid value for '--until': -1 is not in the range x>=0."),
        (("graph", "machine", "escalation", "--format", "jpeg"),
         "BadParameter: Invalid value for '--format': 'jpeg' is not one of 'mermaid', 'dot', "
         "'png', 'svg'."),
        (("graph", "machine", "escalation", "--format", "png"),
         "UsageError: --format png needs --output FILE"),
        (("graph", "tools", "--format", "svg", "--output", "x.png"),
         "UsageError: --output must end in .svg for --format svg"),
        (("replay", "x.jsonl", "--key-file", "k", "--key-env", "K"),
         "UsageError: give --key-file or --key-env, not both"),
        # These act on the audit log: without --audit they were silently ignored.
        (("decide", "form_fill", "-c", "0.5", "--key-file", "k"),
         "UsageError: --key-file needs --audit LOG (it applies to the audit log)"),
        (("decide", "form_fill", "-c", "0.5", "--key-env", "HOME"),
         "UsageError: --key-env needs --audit LOG (it applies to the audit log)"),
        (("decide", "form_fill", "-c", "0.5", "--allow-missing-anchor"),
         "UsageError: --allow-missing-anchor needs --audit LOG (it applies to the audit log)"),
        # A name typed by a user is shown escaped, never sent raw to the terminal.
        (("\x1b[2J",), "NoSuchCommand: No such command '\\x1b[2J'."),
    ])
    def test_usage_errors(self, capsys, argv, line) -> None:
        assert fails(capsys, *argv, code=2) == line

    def test_malformed_catalogue_toml(self, capsys) -> None:
        Path("bad.toml").write_text('[[tool]]\nname = "x"\nrisk = \n', encoding="utf-8")
        for argv in (("tools",), ("decide", "form_fill", "-c", "0.5"), ("graph", "tools")):
            assert fails(capsys, *argv, "--catalogue", "bad.toml").startswith(
                "RuleTableError: bad.toml:3: invalid TOML: ")

    def test_catalogue_row_with_bad_field(self, capsys) -> None:
        start = SHIPPED_TOOLS.index('name = "screenshot_capture"')
        end = SHIPPED_TOOLS.index("[[tool]]", start)
        row = SHIPPED_TOOLS[start:end]
        assert row.count("max_concurrency = 4\n") == 1
        text = SHIPPED_TOOLS[:start] + row.replace("max_concurrency = 4\n",
                                                    'max_concurrency = "four"\n') + \
            SHIPPED_TOOLS[end:]
        Path("tools.toml").write_text(text, encoding="utf-8")
        line = line_of(text, 'max_concurrency = "four"')
        assert fails(capsys, "tools", "--catalogue", "tools.toml") == \
            f"RuleTableError: tools.toml:{line}: tool[screenshot_capture].max_concurrency: " \
            "must be a whole number (got 'four')"

    def test_malformed_escalation_table(self, capsys) -> None:
        Path("rules").mkdir()
        text = SHIPPED_RULES.replace('op = "ge"', 'op = "=>"', 1)
        Path("rules/escalation.toml").write_text(text, encoding="utf-8")
        line = line_of(text, '"=>"')
        expected = f"RuleTableError: rules/escalation.toml:{line}: row[low.dry_run].when.all[0]" \
            ".op: must be one of ge, gt, le, lt, eq, ne (got '=>')"
        assert fails(capsys, "decide", "form_fill", "-c", "0.5", "--rules", "rules") == expected
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.7"))
        assert fails(capsys, "replay", "a.jsonl", "--rules", "rules") == expected

    def test_a_log_without_its_anchor_is_refused_unless_asked(self, capsys) -> None:
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.7"))
        Path("a.jsonl.anchor").unlink()
        before = Path("a.jsonl").read_bytes()
        assert fails(capsys, "decide", "form_fill", "-c", "0.7", "--audit", "a.jsonl") == (
            "AuditChainBroken: a.jsonl: chain broken: no anchor a.jsonl.anchor beside the log: "
            "events cut from its end would go unnoticed; open it with allow_missing_anchor=True "
            "(buddy decide --allow-missing-anchor) to go on")
        assert Path("a.jsonl").read_bytes() == before
        ok(capsys, "decide", "form_fill", "-c", "0.7", "--audit", "a.jsonl",
           "--allow-missing-anchor", "--json")
        kinds = [json.loads(line)["kind"] for line in Path("a.jsonl").read_text().splitlines()]
        assert kinds == ["open", "decision", "recover", "decision"]
        assert "replayed 4 events" in ok(capsys, "replay", "a.jsonl")

    def test_every_problem_of_a_table_is_printed(self, capsys) -> None:
        Path("rules").mkdir()
        text = SHIPPED_RULES.replace('op = "ge"', 'op = "=>"', 2)
        Path("rules/escalation.toml").write_text(text, encoding="utf-8")
        code, out, err = run(capsys, "decide", "form_fill", "-c", "0.5", "--rules", "rules")
        lines = err.splitlines()
        assert (code, out, len(lines)) == (1, "", 2)
        assert [line.split(": ")[2] for line in lines] == [
            "row[low.dry_run].when.all[0].op", "row[low.live].when.all[0].op"]
        assert all(line.startswith("RuleTableError: rules/escalation.toml:") for line in lines)

    def test_a_bug_is_a_traceback_not_a_message(self, monkeypatch) -> None:
        import buddy.engine.app._cli as cli_module

        def broken(*args, **kwargs):
            raise ValueError("a bug, not bad input")

        monkeypatch.setattr(cli_module.Engine, "from_files", broken)
        with pytest.raises(ValueError, match="a bug, not bad input"):
            main(["decide", "form_fill", "-c", "0.5"])

    @pytest.mark.parametrize(("argv", "line"), [
        (("tools", "--catalogue", "missing.toml"), "RuleTableError: missing.toml: no such file"),
        (("decide", "form_fill", "-c", "0.5", "--catalogue", "missing.toml"),
         "RuleTableError: missing.toml: no such file"),
        (("decide", "form_fill", "-c", "0.5", "--rules", "nodir"),
         "RuleTableError: nodir/escalation.toml: no such file"),
        (("replay", "missing.jsonl"), "AuditError: missing.jsonl: no such file"),
        (("decide", "form_fill", "-c", "0.5", "--audit", "a.jsonl", "--key-file", "nokey"),
         "AuditError: nokey: cannot read audit key: No such file or directory"),
        (("replay", "missing.jsonl", "--key-file", "nokey"),
         "AuditError: nokey: cannot read audit key: No such file or directory"),
        (("decide", "form_fill", "-c", "0.5", "--audit", "a.jsonl", "--key-env",
          "BUDDY_TEST_KEY"),
         "AuditError: environment variable BUDDY_TEST_KEY (audit key) is not set or empty"),
        (("decide", "form_fill", "-c", "0.5", "--audit", "nodir/a.jsonl"),
         "FileNotFoundError: nodir/a.jsonl: No such file or directory"),
        (("graph", "machine", "nope"),
         "InputError: unknown machine 'nope' (known: escalation, task)"),
    ])
    def test_missing_files_and_names(self, capsys, argv, line) -> None:
        assert fails(capsys, *argv) == line

    def test_empty_key_file(self, capsys) -> None:
        Path("key").write_text("\n", encoding="utf-8")
        assert fails(capsys, "replay", "x.jsonl", "--key-file", "key") == \
            "AuditError: key: audit key file is empty"

    def test_failed_decide_does_not_leak_the_audit_log(self, capsys) -> None:
        # The log is opened before the catalogue is loaded; a bad catalogue must
        # still close it (else: ResourceWarning, a traceback under -X dev).
        Path("bad.toml").write_text("[[tool]\n", encoding="utf-8")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            line = fails(capsys, "decide", "form_fill", "-c", "0.5", "--audit", "a.jsonl",
                         "--catalogue", "bad.toml")
            gc.collect()
        assert line.startswith("RuleTableError: bad.toml:1: invalid TOML: ")
        assert [str(w.message) for w in caught if w.category is ResourceWarning] == []


# -- audit log and replay -----------------------------------------------------

class TestReplay:
    def test_two_decisions_replay(self, capsys) -> None:
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.7"),
                ("msgraph_send_email", "-c", "0.9", "--approve"))
        assert ok(capsys, "replay", "a.jsonl").splitlines() == [
            "a.jsonl: chain verified (sha256), 3 events, last seq 3",
            "replayed 3 events: 2 decisions and every transition reproduced",
        ]
        report = json.loads(ok(capsys, "replay", "a.jsonl", "--json"))
        assert (report["ok"], report["events"], report["decisions"], report["changes"]) == \
            (True, 3, 2, [])

    def test_decide_audit_reports_seq(self, capsys) -> None:
        ok(capsys, "decide", "form_fill", "-c", "0.7", "--audit", "a.jsonl")
        out = ok(capsys, "decide", "form_fill", "-c", "0.7", "--audit", "a.jsonl")
        assert re.search(r"^audit\s+a\.jsonl \(seq 3\)\s*$", out, re.MULTILINE)

    def test_tampered_line(self, capsys) -> None:
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.7"), ("form_fill", "-c", "0.75"),
                ("form_fill", "-c", "0.9"))
        lines = Path("a.jsonl").read_text("utf-8").splitlines(keepends=True)
        assert '"confidence":0.75,' in lines[2]
        lines[2] = lines[2].replace('"confidence":0.75,', '"confidence":0.95,')
        Path("a.jsonl").write_text("".join(lines), encoding="utf-8")
        assert fails(capsys, "replay", "a.jsonl") == \
            "AuditChainBroken: a.jsonl:3: chain broken at seq 3: hash mismatch (line edited)"
        # Nor does buddy append to it.
        before = Path("a.jsonl").read_bytes()
        assert fails(capsys, "decide", "form_fill", "-c", "0.7", "--audit", "a.jsonl") == \
            "AuditChainBroken: a.jsonl:3: chain broken at seq 3: hash mismatch (line edited)"
        assert Path("a.jsonl").read_bytes() == before

    def test_deleted_middle_line(self, capsys) -> None:
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.7"), ("form_fill", "-c", "0.75"),
                ("form_fill", "-c", "0.9"))
        lines = Path("a.jsonl").read_text("utf-8").splitlines(keepends=True)
        del lines[2]
        Path("a.jsonl").write_text("".join(lines), encoding="utf-8")
        assert fails(capsys, "replay", "a.jsonl") == \
            "AuditChainBroken: a.jsonl:3: chain broken at seq 3: prev does not match the hash " \
            "of the line before (a line was deleted, inserted or reordered)"

    def test_line_not_json_in_the_middle(self, capsys) -> None:
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.7"), ("form_fill", "-c", "0.75"),
                ("form_fill", "-c", "0.9"))
        lines = Path("a.jsonl").read_text("utf-8").splitlines(keepends=True)
        lines[2] = "this is not json\n"
        Path("a.jsonl").write_text("".join(lines), encoding="utf-8")
        assert fails(capsys, "replay", "a.jsonl") == \
            "AuditChainBroken: a.jsonl:3: chain broken at seq 3: line is not a hashed audit event"

    @pytest.mark.parametrize(("bad", "reason"), [
        ('{"seq":3,oops,"prev":"%s"}', "not a valid audit event: unexpected character"),
        ('{"seq":3,"kind":"decision","prev":"%s"}',
         "not a valid audit event: 'ts': is required (seq 3)"),
    ])
    def test_rechained_line_that_is_no_event(self, capsys, bad, reason) -> None:
        # A forger without a key can re-chain anything: the chain verifies, the
        # line still has to be a valid event.
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.7"), ("form_fill", "-c", "0.75"),
                ("form_fill", "-c", "0.9"))
        lines = Path("a.jsonl").read_text("utf-8").splitlines()
        lines[2] = bad % ("0" * 64)  # a body; rechain() fixes prev and adds the hash
        Path("a.jsonl").write_text("\n".join(rechain(lines)) + "\n", encoding="utf-8")
        line = fails(capsys, "replay", "a.jsonl", "--no-anchor")
        assert line.startswith(f"AuditFormatError: a.jsonl:3: {reason}"), line

    def test_not_utf8(self, capsys) -> None:
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.7"))
        with open("a.jsonl", "ab") as fh:
            fh.write(b"\xff\xfe\n")
        assert fails(capsys, "replay", "a.jsonl") == "AuditFormatError: a.jsonl:3: not UTF-8 text"

    def test_unreadable_anchor(self, capsys) -> None:
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.7"))
        Path("a.jsonl.anchor").write_text("garbage", encoding="utf-8")
        assert fails(capsys, "replay", "a.jsonl") == "AuditFormatError: a.jsonl.anchor: " \
            "unreadable anchor: Expecting value: line 1 column 1 (char 0)"
        assert ok(capsys, "replay", "a.jsonl", "--no-anchor").startswith(
            "a.jsonl: chain verified (sha256), 2 events")

    def test_keyed_log(self, capsys, monkeypatch) -> None:
        monkeypatch.setenv("BUDDY_TEST_KEY", "s3cret-s3cret-s3cret")
        audited(capsys, "k.jsonl", ("form_fill", "-c", "0.7", "--key-env", "BUDDY_TEST_KEY"),
                ("form_fill", "-c", "0.9", "--key-env", "BUDDY_TEST_KEY"))
        assert ok(capsys, "replay", "k.jsonl", "--key-env", "BUDDY_TEST_KEY").splitlines()[0] \
            == "k.jsonl: chain verified (hmac-sha256), 3 events, last seq 3"
        Path("key").write_text("s3cret-s3cret-s3cret\n", encoding="utf-8")
        assert ok(capsys, "replay", "k.jsonl", "--key-file", "key").splitlines()[1] == \
            "replayed 3 events: 2 decisions and every transition reproduced"
        needs_key = "AuditChainBroken: k.jsonl:1: chain broken at seq 1: the log is chained " \
            "with HMAC: give its key (--key-file or --key-env) to verify it"
        assert fails(capsys, "replay", "k.jsonl") == needs_key
        assert fails(capsys, "decide", "form_fill", "-c", "0.9", "--audit", "k.jsonl") == \
            needs_key
        monkeypatch.setenv("BUDDY_TEST_KEY", "wrong-wrong-wrong-wrong")
        assert fails(capsys, "replay", "k.jsonl", "--key-env", "BUDDY_TEST_KEY") == \
            "AuditChainBroken: k.jsonl:1: chain broken at seq 1: hash mismatch (line edited, " \
            "or chained without the key)"

    def test_until_prints_state_table(self, capsys) -> None:
        lock_log("a.jsonl")  # seq 1 the header, 2 the lock
        out = ok(capsys, "replay", "a.jsonl", "--until", "1")
        assert "replayed 1 events up to seq 1: 0 decisions" in out
        assert "state at seq 1" in out
        assert re.search(r"│ system\s+│ lock\s+│ UNLOCKED\s+│", out)
        out = ok(capsys, "replay", "a.jsonl", "--until", "2")
        assert "state at seq 2" in out
        assert re.search(r"│ system\s+│ lock\s+│ LOCKED\s+│", out)
        report = json.loads(ok(capsys, "replay", "a.jsonl", "--until", "2", "--json"))
        assert (report["replayed"], report["last_seq"], report["locked"]) == (2, 2, True)

    def test_parallel_replay_reports_alike(self, capsys) -> None:
        """--parallel verifies in a second process: the same report, the same refusal."""
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.7"), ("vision_inspect", "-c", "0.9"))
        alone = json.loads(ok(capsys, "replay", "a.jsonl", "--no-parallel", "--json"))
        assert json.loads(ok(capsys, "replay", "a.jsonl", "--parallel", "--json")) == alone
        lines = Path("a.jsonl").read_text().splitlines()
        lines[1] = lines[1].replace('"confidence":0.7', '"confidence":0.9')
        Path("a.jsonl").write_text("".join(line + "\n" for line in lines))
        refused = fails(capsys, "replay", "a.jsonl", "--no-parallel")
        assert refused.startswith("AuditChainBroken: a.jsonl:2: chain broken at seq 2")
        assert fails(capsys, "replay", "a.jsonl", "--parallel") == refused

    def test_a_locked_log_replays_locked(self, capsys) -> None:
        lock_log("a.jsonl")
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.9"))
        report = json.loads(ok(capsys, "replay", "a.jsonl", "--json"))
        assert (report["decisions"], report["locked"], report["ok"]) == (1, True, True)

    def test_what_if_finds_a_loosening(self, capsys) -> None:
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.7"), ("form_fill", "-c", "0.5"),
                ("vision_inspect", "-c", "0.9"))
        Path("loose").mkdir()
        Path("loose/escalation.toml").write_text(_lowered_medium_live(), encoding="utf-8")
        out = ok(capsys, "replay", "a.jsonl", "--rules", "loose")
        assert "what-if: 3 decisions made with rules" in out
        assert out.splitlines()[1].endswith(": 1 would change")
        assert re.search(r"│ 2\s+│ loosening\s+│ cli\s+│ form_fill\s+│ MEDIUM\s+│ 0\.7\s+│ "
                         r"DRY_RUN\s+│ LIVE\s+│ medium\.live\s+│", out), out
        report = json.loads(ok(capsys, "replay", "a.jsonl", "--rules", "loose", "--json"))
        assert [(c["seq"], c["before"], c["after"]) for c in report["changes"]] == \
            [(2, "DRY_RUN", "LIVE")]
        code, out, err = run(capsys, "replay", "a.jsonl", "--rules", "loose",
                             "--fail-on-loosening")
        assert (code, err) == (3, "")
        assert "loosening" in out

    def test_what_if_with_the_same_rules_is_plain_replay(self, capsys) -> None:
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.7"))
        Path("same").mkdir()
        Path("same/escalation.toml").write_text(SHIPPED_RULES, encoding="utf-8")
        out = ok(capsys, "replay", "a.jsonl", "--rules", "same", "--fail-on-loosening")
        assert out.splitlines()[1] == \
            "replayed 2 events: 1 decision and every transition reproduced"

    def test_long_paths_are_not_wrapped(self, capsys, in_tmp) -> None:
        # Output is for people and for grep in CI: a long log path must not split
        # a message over two lines (rich wraps at the console width otherwise).
        deep = in_tmp / ("d" * 120)
        deep.mkdir()
        log = deep / "a.jsonl"
        audited(capsys, str(log), ("form_fill", "-c", "0.7"))
        with open(log, "ab") as fh:
            fh.write(b'{"seq":3,"ts":')
        lines = ok(capsys, "replay", log).splitlines()
        assert lines[0] == f"{log}: chain verified (sha256), 2 events, last seq 2"
        assert lines[1] == f"warning: {log}:3: torn last line (14 bytes, no newline; a write " \
            "was cut off); verified up to the last whole event"


class TestHostileValues:
    # `buddy decide -a $'\e[2J'` cleared the screen; `-a '[red]x[/]'` printed a red "x".
    @pytest.mark.parametrize("agent, shown", [
        ("\x1b[2J", "\\x1b[2J"), ("[red]x[/]", "[red]x[/]"), ("a\u2028b\x9bc", "a\\u2028b\\x9bc"),
        ("\\[bold]", "\\[bold]"),
    ])
    def test_decide_prints_the_agent_escaped(self, capsys, agent, shown) -> None:
        out = ok(capsys, "decide", "form_fill", "-c", "0.9", "-a", agent)
        assert out.splitlines()[0] == \
            f"form_fill (MEDIUM risk, reversible) for agent {shown} at confidence 0.9"

    def test_json_output_escapes_what_a_terminal_would_act_on(self, capsys) -> None:
        agent = "a\x1b[2J\x9b\u2028\U000e0001"
        out = ok(capsys, "decide", "form_fill", "-c", "0.9", "-a", agent, "--json")
        assert '"agent": "a\\u001b[2J\\u009b\\u2028\\udb40\\udc01"' in out
        assert json.loads(out)["agent"] == agent

    def test_replay_tables_show_log_values_escaped(self, capsys) -> None:
        agent = "ev\x1bil[red]"
        audited(capsys, "a.jsonl", ("form_fill", "-c", "0.7", "-a", agent))
        Path("loose").mkdir()
        Path("loose/escalation.toml").write_text(_lowered_medium_live(), encoding="utf-8")
        out = ok(capsys, "replay", "a.jsonl", "--rules", "loose")
        assert re.search(r"│ 2\s+│ loosening\s+│ ev\\x1bil\[red\]\s+│ form_fill\s+│", out), out

    def test_error_lines_are_escaped(self, capsys) -> None:
        Path("p\x1b.toml").write_text("[[tool]\n", encoding="utf-8")
        line = fails(capsys, "tools", "--catalogue", "p\x1b.toml")
        assert line.startswith("RuleTableError: p\\x1b.toml:1: invalid TOML: ")


def _lowered_medium_live() -> str:
    old = 'id = "medium.live"\nrisk = "MEDIUM"\n' \
        'when = { all = [ { metric = "confidence", op = "ge", value = 0.80 } ] }'
    assert SHIPPED_RULES.count(old) == 1
    return SHIPPED_RULES.replace(old, old.replace("0.80", "0.60"))


# -- graphs -------------------------------------------------------------------

class TestGraph:
    def test_escalation_mermaid(self, capsys) -> None:
        out = ok(capsys, "graph", "machine", "escalation")
        assert out == ok(capsys, "graph", "machine", "escalation", "--format", "mermaid")
        assert out.splitlines()[0] == "stateDiagram-v2"
        assert re.search(r"^\s*DRY_RUN --> LIVE\b", out, re.MULTILINE)
        assert re.search(r"^\s*AWAITING_APPROVAL --> LIVE\b", out, re.MULTILINE)
        assert not re.search(r"^\s*MOCK --> LIVE\b", out, re.MULTILINE)

    @pytest.mark.parametrize("fmt", ["png", "svg"])
    def test_pictures(self, capsys, fmt) -> None:
        assert ok(capsys, "graph", "tools", "--format", fmt, "--output", f"t.{fmt}") == \
            f"wrote t.{fmt}\n"
        head = Path(f"t.{fmt}").read_bytes()[:8]
        assert head == b"\x89PNG\r\n\x1a\n" if fmt == "png" else b"<svg" in \
            Path(f"t.{fmt}").read_bytes()[:400]

    def test_escalation_dot(self, capsys) -> None:
        out = ok(capsys, "graph", "machine", "escalation", "--format", "dot")
        assert out.startswith("digraph")
        assert re.search(r'"?DRY_RUN"?\s*->\s*"?LIVE"?', out)
        assert not re.search(r'"?MOCK"?\s*->\s*"?LIVE"?', out)

    @pytest.mark.parametrize(("fmt", "head"), [("mermaid", "stateDiagram-v2"),
                                               ("dot", "digraph")])
    def test_task(self, capsys, fmt, head) -> None:
        out = ok(capsys, "graph", "machine", "task", "--format", fmt)
        assert out.startswith(head)

    @pytest.mark.parametrize(("fmt", "node", "edge"), [
        ("mermaid", r'(\w+)\["(\w+) \((?:LOW|MEDIUM|HIGH)[^"]*"\]', r"^\s*(\w+) --> (\w+)"),
        ("dot", r'"?(\w+)"? \[label="(\w+) \((?:LOW|MEDIUM|HIGH)[^"]*"\]',
         r'^\s*"?(\w+)"?\s*->\s*"?(\w+)"?'),
    ])
    def test_tools(self, capsys, fmt, node, edge) -> None:
        out = ok(capsys, "graph", "tools", "--format", fmt)
        for name in RISKS:
            assert name in out
        label = dict(re.findall(node, out)) or {n: n for n in RISKS}
        edges = {(label.get(a, a), label.get(b, b)) for a, b in re.findall(edge, out, re.M)}
        # An edge runs from a dependency to its user.
        assert ("form_fill", "button_click") in edges
        assert ("msgraph_get_user", "msgraph_send_email") in edges
        assert ("button_click", "form_fill") not in edges


# -- the installed entry point ------------------------------------------------

def test_entry_point_subprocess(tmp_path: Path) -> None:
    buddy = Path(sys.executable).with_name("buddy")
    assert buddy.exists(), buddy
    done = subprocess.run([buddy, "decide", "form_fill", "--confidence", "0.9", "--json"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert json.loads(done.stdout)["mode"] == "LIVE"
    done = subprocess.run([buddy, "decide", "form_fill", "--confidence", "nan"],
                          capture_output=True, text=True, timeout=30, check=False)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "BadParameter: Invalid value for '--confidence' / '-c': must be a " \
        "number in [0, 1] (got 'nan')\n"
