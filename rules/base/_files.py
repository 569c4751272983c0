"""Files written whole or not at all, and JSON Lines split the way JSON means them."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO

__all__ = ["NotReadable", "read_regular", "split_lines", "write_atomic"]


def write_atomic(path: str | os.PathLike[str], data: str | bytes | Callable[[IO[bytes]], object],
                 *, fsync: bool = True, private: bool = False) -> Path:
    """Write ``data`` to ``path`` via a temp file in the same directory, fsync, rename.

    ``data`` is text (UTF-8), bytes, or a function writing to a binary file.
    A reader sees the old file or the new one, never half of one; the temp
    file is removed if anything fails. With ``fsync=False`` the temp file is
    not fsynced before the rename: still atomic for readers, but after a crash
    of the machine the file may be empty or old. ``private=True`` keeps it readable by
    its owner alone (0600), from its first byte.
    """
    target = Path(path)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        if not private:
            os.fchmod(fd, 0o666 & ~_umask())  # as open() would make it, not mkstemp's 0600
        with os.fdopen(fd, "wb") as fh:
            if callable(data):
                data(fh)
            else:
                fh.write(data.encode("utf-8") if isinstance(data, str) else data)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return target


def _umask() -> int:
    """The process's umask (read by setting it and setting it back: no other way)."""
    global _UMASK
    if _UMASK is None:
        _UMASK = os.umask(0o022)
        os.umask(_UMASK)
    return _UMASK


_UMASK: int | None = None


def split_lines(data: bytes) -> tuple[list[bytes], bytes]:
    """Split JSON Lines on ``\\n`` bytes only: ``(whole lines, the tail after the last \\n)``.

    Not ``str.splitlines``: that also splits on U+2028, U+2029, U+0085 and
    other separators, which JSON strings may hold raw.

    >>> split_lines(b'{"a":"x\\xe2\\x80\\xa8y"}\\n{"b":1}\\n{"c"')
    ([b'{"a":"x\\xe2\\x80\\xa8y"}', b'{"b":1}'], b'{"c"')
    """
    end = data.rfind(b"\n") + 1
    lines = data[:end].split(b"\n")
    lines.pop()  # the empty piece after the last newline
    return lines, data[end:]


class NotReadable(ValueError):
    """A file that is not a regular file, or larger than its reader takes (one line)."""


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """The bytes of the regular file at ``path``, at most ``limit`` of them.

    A FIFO, a device (``/dev/zero``), a directory or a socket is refused before
    it is read (a FIFO without a writer would block; ``/dev/zero`` never ends),
    and so is a file larger than ``limit``: :class:`NotReadable`, its message
    without the path (the caller names the file as its messages do).
    :class:`OSError` when the file cannot be opened or read.
    """
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise NotReadable("not a regular file")
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(fd)  # what was opened, not what the name pointed to before
        if not stat.S_ISREG(info.st_mode):
            raise NotReadable("not a regular file")
        if info.st_size > limit:
            raise NotReadable(f"larger than {limit:,} bytes ({info.st_size:,})")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > limit:
            raise NotReadable(f"larger than {limit:,} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)
