"""What the application's writers share: JSON and JSON Lines bytes, percentages, and a
per-wave PNG plot (when matplotlib is installed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any, Literal

import orjson

from buddy.rules.base._files import write_atomic

__all__ = ["json_doc", "jsonl", "pct", "per_wave_png"]


def json_doc(obj: Any) -> bytes:
    """``obj`` as an indented JSON document, newline-terminated (non-string keys allowed)."""
    return orjson.dumps(obj, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS) + b"\n"


def jsonl(items: Sequence[Any]) -> bytes:
    """``items`` as JSON Lines, one per line."""
    return b"".join(orjson.dumps(i, option=orjson.OPT_NON_STR_KEYS) + b"\n" for i in items)


def pct(x: float) -> str:
    """``0.125`` -> ``'12.5%'``."""
    return f"{100 * x:.1f}%"


def per_wave_png(path: Path, waves: Sequence[int],
                 series: Sequence[tuple[str, Sequence[float], str]], *, title: str,
                 ylim: tuple[float, float] | None = None,
                 legend: Literal["lower left", "lower right"] = "lower left") -> Path | None:
    """Lines over the waves (``series``: label, one value per wave, marker) as a PNG
    written whole at ``path``; None (nothing written) without matplotlib or waves."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    if not waves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.6), dpi=100)
    try:
        for label, values, marker in series:
            ax.plot(waves, values, marker=marker, label=label)
        ax.set_xlabel("wave")
        if ylim is not None:
            ax.set_ylim(*ylim)
        ax.set_xticks(waves)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(loc=legend)
        fig.tight_layout()

        def save(fh: IO[bytes]) -> None:
            fig.savefig(fh, format="png", metadata={"Software": None})

        write_atomic(path, save)
    finally:
        plt.close(fig)
    return path
