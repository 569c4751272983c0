"""The worker process of :class:`~buddy.engine.core._verifier.BackgroundVerify`.

Run as a script by its path, not with ``-m``: ``-m buddy.engine.core._verify_worker``
would first import ``buddy.engine`` and ``buddy.engine.core`` (the whole engine,
some 400 ms), where this process needs only :mod:`buddy.engine.core._chain` and
what it imports. So before importing it, the packages above it are entered in
``sys.modules`` as found but not run (their ``__init__`` would import the rest);
this process imports nothing else from buddy, and exits once it has replied.

It reads one line of JSON on stdin (``source``, the log's name in messages,
``key`` in hex or null, ``anchor`` as a dict or null), then the log's bytes to
the end of its input, verifies them as :func:`verify_reader` does and writes
one JSON object on stdout: ``{"report": {...}, "torn": ...}``, or
``{"error": <class name>, ...its fields}`` for an :class:`AuditError`. Anything
else (a crash, a kill) leaves stdout without a verdict, and the parent verifies
in its own process.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

#: The packages above ``_chain`` and what it imports, entered but not run.
PACKAGES = ("buddy.engine", "buddy.engine.core", "buddy.rules", "buddy.rules.base")


def main() -> int:
    for name in PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None:
            return 2
        sys.modules[name] = importlib.util.module_from_spec(spec)
    # Imported here, not on top: the stubs above must be in place first (the point of
    # this module); nothing here is imported by anything else.
    from buddy.engine.core._chain import Anchor, LogReader, verify_reader
    from buddy.rules.base.errors import AuditChainBroken, AuditError, AuditFormatError

    stdin = sys.stdin.buffer
    job = json.loads(stdin.readline())
    key = None if job["key"] is None else bytes.fromhex(job["key"])
    anchor = None if job["anchor"] is None else Anchor(**job["anchor"])
    reply: dict[str, Any]
    try:
        report, torn = verify_reader(LogReader(job["source"], file=stdin), key=key,
                                     anchor=anchor)
    except AuditError as exc:
        if type(exc) is AuditChainBroken:
            reply = {"error": "AuditChainBroken", "where": exc.where, "seq": exc.seq,
                     "reason": exc.reason}
        elif type(exc) is AuditFormatError:
            reply = {"error": "AuditFormatError", "where": exc.where, "reason": exc.reason}
        elif type(exc) is AuditError:
            reply = {"error": "AuditError", "message": str(exc)}
        else:  # a kind the parent would not raise as it is: no verdict, it verifies itself
            raise
    else:
        reply = {"report": {"count": report.count, "last_seq": report.last_seq,
                            "last_hash": report.last_hash, "chain": report.chain},
                 "torn": torn}
    sys.stdout.write(json.dumps(reply))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
