"""Peer policy engines for the benchmark, each loaded with buddy's escalation table.

Every peer is exposed as ``decide(tool, confidence, approved) -> "MOCK" | "DRY_RUN" | "LIVE"``
and must agree with :func:`reference` (plain-Python version of buddy's table):

    LOW:    conf >= 0.70 -> LIVE;             >= 0.50 -> DRY_RUN; else MOCK
    MEDIUM: conf >= 0.80 -> LIVE;             >= 0.65 -> DRY_RUN; else MOCK
    HIGH:   conf >= 0.85 and approved -> LIVE; >= 0.80 -> DRY_RUN; else MOCK

Peers (:data:`PEERS` maps a name to a :class:`Peer`: label, factory, flags):
  * ``casbin`` -- :func:`make_casbin`: pycasbin ``Enforcer`` (model + policy from
    strings, in memory), ONE ``enforce_ex(tool, confidence, approved)`` per decision:
    the policy rows are ``p, risk, mode, min_conf, approval`` with LIVE before DRY_RUN
    per risk and ``g`` rows mapping tool -> risk; the effect ``some(where (p.eft ==
    allow))`` stops at the first matching row, which ``enforce_ex`` returns, so its mode
    cell is the answer and no match is MOCK. Its best: one call, no log
    (``enable_log=False``), request values passed as they are (no subject object).
    pycasbin has no compiled matcher to opt into: every ``enforce_ex`` re-parses the
    matcher (``ast.parse`` in ``casbin.util.expression.SimpleEval``) and walks it per
    row with simpleeval.
  * ``casbin+audit`` -- :func:`make_casbin_audit`: the same, with casbin's own log
    (``enable_log=True``) sent to a file, one flushed line per decision: the request
    and allow/deny, not the mode.
  * ``casbin-floor`` -- :func:`make_casbin_floor`: NOT buddy's table: pycasbin's basic
    ACL model (``m = r.sub == p.sub && r.obj == p.obj && r.act == p.act``) with one
    policy line and one ``enforce("alice", "data1", "read")`` per call, whatever the
    arguments (always LIVE). The floor any pycasbin policy costs; outside the agreement
    check.
  * ``agt`` -- :func:`make_agt`: Microsoft Agent Governance Toolkit
    ``agent_os.policies.PolicyEvaluator`` (PyPI ``agent-os-kernel``), one PolicyDocument
    per risk and ONE ``evaluate({tool_name, confidence, approved})`` per decision: the
    documents' single-condition rules walk the confidence bands bottom-up in priority
    order (see :func:`agt_policy_documents`), the evaluator returns the first match,
    and the matched rule's name maps to its mode (no match: the default, deny, MOCK).
    Its best: one call to the evaluator built for the tool's risk (a dict picks it),
    no audit; ``evaluate`` itself re-sorts the rules and builds a pydantic
    ``PolicyDecision`` with a timestamped ``audit_entry`` on every call.
  * ``agt+audit`` -- :func:`make_agt_audit`: the same, with AGT's own
    ``GovernanceAuditLogger`` writing the decision and the evaluator's ``audit_entry``
    as one JSON line per decision to a ``JsonlFileBackend``, flushed per decision.

Both audit peers write every record to a file and flush it (no fsync), as buddy's file
audit does per event; by default to a scratch file removed at exit.

Run ``python bench/_peers.py`` to check every peer but the floor against
:func:`reference` on every 3-decimal confidence, count the audit peers' records, and
print p50/p99 per peer.
"""

from __future__ import annotations

import atexit
import tempfile
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

Decide = Callable[[str, float, bool], str]

MOCK, DRY_RUN, LIVE = "MOCK", "DRY_RUN", "LIVE"
AGENT = "agent-1"  # the agent an audit record names (bench/decide.py's)
CANDIDATES = (LIVE, DRY_RUN)  # highest first; MOCK is the fallback

# tool name -> risk
CATALOGUE: dict[str, str] = {
    "vision_inspect": "LOW",
    "web_search": "LOW",
    "form_fill": "MEDIUM",
    "file_write": "MEDIUM",
    "msgraph_send_email": "HIGH",
    "payment_submit": "HIGH",
}

# risk -> mode -> (min_confidence, needs_approval); the single source for all peers.
TABLE: dict[str, dict[str, tuple[float, bool]]] = {
    "LOW": {LIVE: (0.70, False), DRY_RUN: (0.50, False)},
    "MEDIUM": {LIVE: (0.80, False), DRY_RUN: (0.65, False)},
    "HIGH": {LIVE: (0.85, True), DRY_RUN: (0.80, False)},
}


def reference(tool: str, confidence: float, approved: bool) -> str:
    """buddy's escalation table in plain Python."""
    risk = CATALOGUE[tool]
    if risk == "LOW":
        return LIVE if confidence >= 0.70 else DRY_RUN if confidence >= 0.50 else MOCK
    if risk == "MEDIUM":
        return LIVE if confidence >= 0.80 else DRY_RUN if confidence >= 0.65 else MOCK
    if risk == "HIGH":
        if confidence >= 0.85 and approved:
            return LIVE
        return DRY_RUN if confidence >= 0.80 else MOCK
    raise KeyError(risk)


# --------------------------------------------------------------------------- casbin

CASBIN_MODEL = """\
[request_definition]
r = tool, conf, approved

[policy_definition]
p = risk, mode, min_conf, approval

[role_definition]
g = _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.tool, p.risk) && r.conf >= num(p.min_conf) && (p.approval == "any" || r.approved)
"""


def casbin_policy_text() -> str:
    """Policy rows (risk, mode, min_conf, approval), LIVE before DRY_RUN per risk, then
    g rows mapping tool -> risk.

    The order is the encoding: ``some(where (p.eft == allow))`` stops at the first row
    whose matcher holds and ``enforce_ex`` returns that row, so its ``mode`` cell is the
    highest mode the call may have; no row matching means MOCK.
    """
    rows = [
        f"p, {risk}, {mode}, {modes[mode][0]:.2f}, {'required' if modes[mode][1] else 'any'}"
        for risk, modes in TABLE.items()
        for mode in CANDIDATES
    ]
    rows += [f"g, {tool}, {risk}" for tool, risk in CATALOGUE.items()]
    return "\n".join(rows) + "\n"


def _import_casbin() -> tuple[Any, Any]:
    try:
        import casbin
        from casbin.persist.adapters.string_adapter import StringAdapter
    except ImportError as exc:
        raise ImportError(
            "peer 'casbin' unavailable: PyPI package `casbin` is not installed "
            "(pip install 'casbin>=1.43')"
        ) from exc
    return casbin, StringAdapter


def _casbin_table_decider(**enforcer_options: Any) -> Decide:
    casbin, StringAdapter = _import_casbin()
    model = casbin.Model()
    model.load_model_from_text(CASBIN_MODEL)
    enforcer = casbin.Enforcer(model, StringAdapter(casbin_policy_text()), **enforcer_options)
    enforcer.add_function("num", float)  # policy cells are strings; compare as numbers
    enforce_ex = enforcer.enforce_ex

    def casbin_decide(tool: str, confidence: float, approved: bool) -> str:
        allowed, rule = enforce_ex(tool, confidence, approved)
        return rule[1] if allowed else MOCK  # rule = [risk, mode, min_conf, approval]

    return casbin_decide


def make_casbin() -> Decide:
    """pycasbin deciding buddy's table with one ``enforce_ex`` per decision, no log."""
    # enable_log=False (the default) sets logging.getLogger("casbin*").disabled = True;
    # passed explicitly so a future default change cannot put a log line in every enforce().
    return _casbin_table_decider(enable_log=False)


def make_casbin_audit(path: Path | None = None) -> Decide:
    """:func:`make_casbin` with pycasbin's own log as the audit: a record per decision.

    ``enable_log=True`` with a ``logging_config`` that sends the ``casbin.enforcer``
    logger, in casbin's own record format (``{asctime} {message}``), to a
    ``logging.FileHandler`` on ``path`` (a scratch file by default), which flushes
    every record. Each ``enforce_ex`` writes ``<time> Request: <tool>, <confidence>,
    <approved> ---> True|False`` (INFO if allowed, WARNING if not): the request and
    the verdict, not the matched row, so a DRY_RUN and a LIVE both read ``True``.

    casbin's log switch is process-wide: ``enable_log=True`` runs
    ``logging.config.dictConfig`` (which also closes the process's existing logging
    handlers), and any later ``Enforcer(enable_log=False)`` (every other casbin peer)
    disables the ``casbin.enforcer`` logger again, so build and use this peer before
    the next one.
    """
    from casbin.util.log import DEFAULT_LOGGING

    path = path or _scratch_path("casbin-audit.log")
    config = {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": DEFAULT_LOGGING["formatters"],
        "handlers": {
            "audit": {
                "class": "logging.FileHandler",
                "filename": str(path),
                "formatter": "casbin_formatter",
                "level": "INFO",
            }
        },
        "loggers": {
            "casbin.enforcer": {"handlers": ["audit"], "level": "INFO", "propagate": False}
        },
    }
    return _casbin_table_decider(enable_log=True, logging_config=config)


CASBIN_FLOOR_MODEL = """\
[request_definition]
r = sub, obj, act

[policy_definition]
p = sub, obj, act

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = r.sub == p.sub && r.obj == p.obj && r.act == p.act
"""


def make_casbin_floor() -> Decide:
    """pycasbin's cheapest decision: the basic ACL model, one policy line, one ``enforce``.

    Not buddy's table: the callable ignores its arguments, asks
    ``enforce("alice", "data1", "read")`` (always allowed) and answers LIVE. It is the
    floor any pycasbin policy costs per call, so it is left out of the agreement check.
    """
    casbin, StringAdapter = _import_casbin()
    model = casbin.Model()
    model.load_model_from_text(CASBIN_FLOOR_MODEL)
    enforcer = casbin.Enforcer(model, StringAdapter("p, alice, data1, read\n"), enable_log=False)
    enforce = enforcer.enforce

    def casbin_floor(tool: str, confidence: float, approved: bool) -> str:
        return LIVE if enforce("alice", "data1", "read") else MOCK

    return casbin_floor


# --------------------------------------------------------------------------- AGT


def _mode_at(modes: dict[str, tuple[float, bool]], confidence: float, approved: bool) -> str:
    """The mode TABLE gives a risk's ``modes`` at one point (how the bands are labelled)."""
    for mode in CANDIDATES:
        min_conf, needs_approval = modes[mode]
        if confidence >= min_conf and (approved or not needs_approval):
            return mode
    return MOCK


def _agt_rule(name: str, field: str, operator: str, value: object, mode: str) -> dict:
    return {
        "name": name,
        "condition": {"field": field, "operator": operator, "value": value},
        "action": "allow" if mode == LIVE else "deny",  # allowed = may run live
        "message": mode,
    }


def agt_policy_documents() -> dict[str, dict]:
    """One PolicyDocument (as plain data) per risk; its first matching rule names the mode.

    A PolicyRule holds ONE condition and the evaluator returns the first match in
    descending priority, so the rules walk the confidence bands bottom-up: ``confidence
    lt <threshold>`` for each band below the top one (its mode cannot depend on
    approval here: ValueError if it does), then, in the top band, ``approved eq True``
    when approval changes the mode there, then ``confidence gte <top threshold>``. The
    default action is deny (MOCK). So HIGH reads: conf < 0.80 -> MOCK; conf < 0.85 ->
    DRY_RUN; approved -> LIVE; conf >= 0.85 -> DRY_RUN.

    The AND of a LIVE rule is thus split over rules, which holds for the inputs
    buddy accepts (a finite confidence, a bool approval): a NaN confidence, which
    buddy refuses, fails every comparison here and would reach ``approved eq True``,
    LIVE. A PolicyRule cannot test two fields, so no ordering is safe for both NaN and
    a missing approval (AGT treats a None field as no match).
    """
    docs: dict[str, dict] = {}
    for risk, modes in TABLE.items():
        thresholds = sorted({min_conf for min_conf, _ in modes.values()})
        rules = []
        lower = float("-inf")
        for upper in thresholds:
            mode = _mode_at(modes, lower, False)
            if _mode_at(modes, lower, True) != mode:
                raise ValueError(f"{risk}: approval changes the mode below {upper}")
            rules.append(_agt_rule(f"{risk}/{mode}/conf<{upper}", "confidence", "lt", upper, mode))
            lower = upper
        if _mode_at(modes, lower, True) != _mode_at(modes, lower, False):
            mode = _mode_at(modes, lower, True)
            rules.append(_agt_rule(f"{risk}/{mode}/approved", "approved", "eq", True, mode))
        mode = _mode_at(modes, lower, False)
        rules.append(_agt_rule(f"{risk}/{mode}/conf>={lower}", "confidence", "gte", lower, mode))
        for i, rule in enumerate(rules):
            rule["priority"] = 10 * (len(rules) - i)
        docs[risk] = {
            "version": "1.0",
            "name": f"buddy-escalation-{risk.lower()}",
            "rules": rules,
            "defaults": {"action": "deny"},
        }
    return docs


def _agt_table() -> tuple[Mapping[str, Callable[[dict[str, Any]], Any]], dict[str | None, str]]:
    """Per tool, the ``evaluate`` of its risk's evaluator; per matched rule, its mode."""
    try:
        # Importing agent_os runs agent_os/__init__.py: it needs PyYAML (undeclared by
        # agent-os-kernel 3.7.0) and emits a PydanticDeprecatedSince20 warning from amb_core.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from agent_os.policies import PolicyDocument, PolicyEvaluator
    except ImportError as exc:
        raise ImportError(
            "peer 'agt' unavailable: cannot import agent_os.policies.PolicyEvaluator "
            f"(pip install 'agent-os-kernel>=3.7' pyyaml): {exc}"
        ) from exc

    docs = agt_policy_documents()
    evaluate = {
        risk: PolicyEvaluator(policies=[PolicyDocument.model_validate(doc)]).evaluate
        for risk, doc in docs.items()
    }
    by_tool = {tool: evaluate[risk] for tool, risk in CATALOGUE.items()}
    # matched_rule -> mode; None is the document's default (deny): MOCK.
    mode_of: dict[str | None, str] = {None: MOCK}
    mode_of.update((r["name"], r["message"]) for doc in docs.values() for r in doc["rules"])
    return by_tool, mode_of


def make_agt() -> Decide:
    """AGT deciding buddy's table with one ``evaluate`` per decision, no audit."""
    by_tool, mode_of = _agt_table()

    def agt_decide(tool: str, confidence: float, approved: bool) -> str:
        ctx = {"tool_name": tool, "confidence": confidence, "approved": approved}
        return mode_of[by_tool[tool](ctx).matched_rule]

    return agt_decide


def make_agt_audit(path: Path | None = None) -> Decide:
    """:func:`make_agt` with AGT's own audit logger: a record per decision.

    ``agent_os.audit_logger.GovernanceAuditLogger`` with a ``JsonlFileBackend`` on
    ``path`` (a scratch file by default). Per decision: ``log_decision(agent_id, tool,
    mode, reason, policy_decision=<the evaluator's audit_entry>)`` -- one JSON line with
    AGT's timestamp, agent, tool, mode, reason and the evaluator's own audit entry
    (policy, rule, action, context snapshot, timestamp) -- then ``flush()``, as the
    backend buffers otherwise (buddy's file audit flushes every event too).
    """
    by_tool, mode_of = _agt_table()
    from agent_os.audit_logger import GovernanceAuditLogger, JsonlFileBackend

    audit = GovernanceAuditLogger()
    audit.add_backend(JsonlFileBackend(path or _scratch_path("agt-audit.jsonl")))
    log_decision, flush = audit.log_decision, audit.flush

    def agt_audited(tool: str, confidence: float, approved: bool) -> str:
        ctx = {"tool_name": tool, "confidence": confidence, "approved": approved}
        decision = by_tool[tool](ctx)
        mode = mode_of[decision.matched_rule]
        log_decision(AGENT, tool, mode, decision.reason, policy_decision=decision.audit_entry)
        flush()
        return mode

    return agt_audited


@attrs.frozen
class Peer:
    """A peer as the benchmark runs it."""

    label: str  # how a results table names it
    make: Callable[..., Decide]  # audit peers take an optional path for their records
    decides_table: bool = True  # False: a floor, left out of the agreement check
    audits: bool = False  # True: one record per decision, written by the peer itself


PEERS: dict[str, Peer] = {
    "casbin": Peer("pycasbin, 1 enforce_ex, no log", make_casbin),
    "casbin+audit": Peer("pycasbin + own log to file", make_casbin_audit, audits=True),
    "casbin-floor": Peer("pycasbin floor: 1-line ACL", make_casbin_floor, decides_table=False),
    "agt": Peer("AGT, 1 evaluate, no audit", make_agt),
    "agt+audit": Peer("AGT + GovernanceAuditLogger", make_agt_audit, audits=True),
}


REFERENCE = Peer("buddy's table, plain Python", lambda: reference)


def _scratch_path(name: str) -> Path:
    """``name`` in a fresh temporary directory that is removed when the process exits."""
    scratch = tempfile.TemporaryDirectory(prefix="buddy-bench-peers-")
    atexit.register(scratch.cleanup)
    return Path(scratch.name) / name


# --------------------------------------------------------------------------- self-check

# Every confidence with 3 decimals (as bench/decide.py draws them), each threshold among
# them: i / 1000 is the float the literal 0.7 is.
GRID = tuple(i / 1000 for i in range(1001))


def _cases() -> list[tuple[str, float, bool]]:
    return [(t, c, a) for t in CATALOGUE for c in GRID for a in (True, False)]


def _time(decide: Decide, cases: list[tuple[str, float, bool]], n: int) -> tuple[float, float]:
    """p50 and p99 (us) of ``n`` calls cycling through ``cases``, after one warm-up pass."""
    from time import perf_counter_ns

    for case in cases:
        decide(*case)
    samples = []
    for i in range(n):
        tool, conf, appr = cases[i % len(cases)]
        t0 = perf_counter_ns()
        decide(tool, conf, appr)
        samples.append(perf_counter_ns() - t0)
    samples.sort()
    return samples[n // 2] / 1000, samples[min(n - 1, (n * 99) // 100)] / 1000


def _measure(name: str, peer: Peer, decide: Decide, audit: Path | None, n: int) -> tuple[str, bool]:
    """One results row: check ``decide`` on every case, time it, count its records."""
    cases = _cases()
    answers = [decide(*case) for case in cases]
    bad = [(c, a, reference(*c)) for c, a in zip(cases, answers, strict=True) if a != reference(*c)]
    if peer.decides_table and bad:
        return f"{name} disagrees with reference on {len(bad)} cases, e.g. {bad[:3]}", False
    p50, p99 = _time(decide, cases, n)
    check = f"agrees on {len(cases)}" if peer.decides_table else "floor, not checked"
    records = "-"
    if audit is not None:
        calls = 2 * len(cases) + n  # check, warm-up, timed
        with audit.open(encoding="utf-8") as lines:
            written = sum(1 for _ in lines)
        if written != calls:
            return f"{name} wrote {written} audit records for {calls} decisions", False
        records = f"{written} = decisions"
    return f"{name:<14}{peer.label:<32}{check:<20}{p50:>9.2f}{p99:>10.2f}  {records}", True


def main(n: int = 20_000) -> int:
    """Check every peer against :func:`reference`, time it, count its audit records.

    Each peer is built, checked and timed before the next is built (casbin's log switch
    is process-wide, see :func:`make_casbin_audit`).
    """
    print(f"{len(_cases())} cases: {len(CATALOGUE)} tools x {len(GRID)} confidences x approval")
    print(f"{'peer':<14}{'label':<32}{'check':<20}{'p50 us':>9}{'p99 us':>10}  audit records")
    row, _ = _measure("reference", REFERENCE, reference, None, n)
    print(row)
    with tempfile.TemporaryDirectory(prefix="buddy-bench-peers-") as tmp:
        for name, peer in PEERS.items():
            audit = Path(tmp) / f"{name}.log" if peer.audits else None
            try:
                decide = peer.make(audit) if audit else peer.make()
            except ImportError as exc:
                print(f"{name:<14}not measured: {str(exc).splitlines()[0]}")
                continue
            row, ok = _measure(name, peer, decide, audit, n)
            print(row)
            if not ok:
                return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
