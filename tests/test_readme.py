"""The README's embedding example runs and prints what the README says it prints."""

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _blocks() -> tuple[str, str]:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Embed it"):]
    code = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    expected = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    assert code and expected, "README's 'Embed it' section lost its code or output block"
    return code.group(1), expected.group(1)


def test_embedding_example_is_short():
    code, _ = _blocks()
    assert len([line for line in code.splitlines() if line.strip()]) <= 10


def test_embedding_example_prints_what_readme_says():
    code, expected = _blocks()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {})
    assert out.getvalue() == expected


def test_readme_names_both_fresh_machine_commands():
    text = README.read_text(encoding="utf-8")
    assert ".venv/bin/python -m pytest" in text
    assert (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text().count(
        "python -m pytest") == 1
