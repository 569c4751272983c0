"""A log's chain verified in a second process, while this one replays its events.

:class:`BackgroundVerify` starts the worker (:mod:`._verify_worker`, a new
Python that imports only the chain's module) on a file log's first ``limit``
bytes, and :meth:`~BackgroundVerify.result` waits for its verdict: what
:func:`verify_log` returns, or the same exception with the same message. A
worker that cannot start, dies, is killed or replies anything but a verdict
gives none: the log is then verified in this process, so no result is ever
ok without a verification. :func:`background_pays` says when a second process
is worth its start (some 150 ms on another CPU).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

import attrs

from buddy.engine.core._chain import Anchor, ChainReport, verify_log
from buddy.rules.base.errors import AuditChainBroken, AuditError, AuditFormatError

__all__ = ["MIN_BACKGROUND_BYTES", "BackgroundVerify", "background_pays"]

#: The smallest log worth verifying in a second process. The worker's verdict comes some
#: 150 ms (its start: Python and the chain's imports) plus verify time V after it is
#: started; the replay, now without V, takes R per event: it is sooner when
#: 0.15 s + V n < (R + V) n, that is n > 0.15 s / R: ~40k events (~22 MB) at today's
#: R ~ 4 us, ~75k (~40 MB) at 2 us. Alone (nothing to do beside it) it never pays.
MIN_BACKGROUND_BYTES = 32 << 20

_WORKER = Path(__file__).with_name("_verify_worker.py")


def background_pays(size: int, *, jobs: int | None = None,
                    min_bytes: int = MIN_BACKGROUND_BYTES) -> bool:
    """Whether to verify a log of ``size`` bytes in a second process.

    ``jobs``: processes allowed; None decides by the machine (more than one CPU),
    1 (or less) forces it off. Any way, a log under ``min_bytes`` is verified in
    the process that reads it.

    >>> background_pays(100 << 20, jobs=2), background_pays(100 << 20, jobs=1)
    (True, False)
    >>> background_pays(1 << 20, jobs=2)
    False
    """
    if jobs is None:
        jobs = os.cpu_count() or 1
    return jobs > 1 and size >= min_bytes


class BackgroundVerify:
    """:func:`verify_log` of a file's first ``limit`` bytes, in a worker process.

    The worker starts when this is made; :meth:`result` waits for it,
    :meth:`cancel` (or leaving the ``with`` block without a result) kills it.
    The key goes to the worker on its stdin, never on its command line or in
    its environment (both show in ``/proc``).
    """

    def __init__(self, path: str | os.PathLike[str], *, key: bytes | None,
                 anchor: Anchor | None, limit: int) -> None:
        self.path, self.key, self.anchor, self.limit = path, key, anchor, limit
        self._done: tuple[ChainReport, str | None] | None = None
        job = json.dumps({"path": os.fspath(path), "key": None if key is None else key.hex(),
                          "anchor": None if anchor is None else attrs.asdict(anchor),
                          "limit": limit}).encode()
        self._proc: subprocess.Popen[bytes] | None
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-P", str(_WORKER)], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, close_fds=True)
        except OSError:
            self._proc = None  # no worker: result() verifies here
            return
        stdin: IO[bytes] | None = self._proc.stdin
        assert stdin is not None
        try:
            stdin.write(job)  # some hundred bytes: the pipe takes them without blocking
            stdin.close()
        except OSError:
            self.cancel()

    def result(self) -> tuple[ChainReport, str | None]:
        """Wait for the verdict: the report and the torn tail, as :func:`verify_log` gives.

        Raises what :func:`verify_log` would raise, with the same message: a
        worker's error is raised as its class with its fields; without a
        verdict from the worker, the log is verified in this process.
        """
        if self._done is not None:
            return self._done
        reply = self._reply()
        verdict = _verdict(reply) if reply is not None else None
        if verdict is None:
            verdict = verify_log(self.path, key=self.key, anchor=self.anchor, limit=self.limit)
        self._done = verdict
        return verdict

    def _reply(self) -> Any:
        """The worker's reply, decoded, or None when it gave none (or it is not JSON)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        try:
            assert proc.stdout is not None
            out = proc.stdout.read()
            proc.stdout.close()
            if proc.wait() != 0:
                return None
            return json.loads(out)
        except (OSError, ValueError):
            return None
        finally:
            _stop(proc)

    def cancel(self) -> None:
        """Kill the worker (when its verdict is not wanted any more)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            _stop(proc)

    def __enter__(self) -> BackgroundVerify:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


_REPORT = {"count": int, "last_seq": int, "last_hash": str, "chain": str}


def _verdict(reply: Any) -> tuple[ChainReport, str | None] | None:
    """The verdict in a worker's reply: the report and torn tail, or None when the reply
    is not one; an error it reports is raised."""
    if not isinstance(reply, dict):
        return None
    if reply.keys() == {"report", "torn"}:
        report, torn = reply["report"], reply["torn"]
        if (isinstance(report, dict) and report.keys() == _REPORT.keys()
                and all(type(report[k]) is t for k, t in _REPORT.items())
                and (torn is None or isinstance(torn, str))):
            return ChainReport(**report), torn
        return None
    error = reply.get("error")
    if error == "AuditChainBroken" and reply.keys() == {"error", "where", "seq", "reason"}:
        where, seq, reason = reply["where"], reply["seq"], reply["reason"]
        if isinstance(where, str) and isinstance(reason, str) and (
                seq is None or type(seq) is int):
            raise AuditChainBroken(where, seq, reason)
    elif error == "AuditFormatError" and reply.keys() == {"error", "where", "reason"}:
        where, reason = reply["where"], reply["reason"]
        if isinstance(where, str) and isinstance(reason, str):
            raise AuditFormatError(where, reason)
    elif error == "AuditError" and reply.keys() == {"error", "message"}:
        if isinstance(reply["message"], str):
            raise AuditError(reply["message"])
    return None
