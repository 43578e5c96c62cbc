"""The README's Python, Node and C sections show code taken verbatim from the example files that
the test suites run (python/run-tests, node/run-tests, make -C tests/c test): keep them in sync."""

from __future__ import annotations

import re
import textwrap

from conftest import REPO

SECTIONS = {
    "Python": (
        "python",
        [REPO / "python" / "examples" / n for n in ("hello.py", "ci_build.py", "client_build.py")],
    ),
    "Node": ("js", [REPO / "node" / "examples" / "hello.mjs", REPO / "node" / "examples" / "ci_build.mjs"]),
    "C": ("c", [REPO / "tests" / "c" / "example.c", REPO / "tests" / "c" / "ci_build.c"]),
}


def section(readme: str, title: str) -> str:
    m = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", readme, re.S | re.M)
    assert m, f"README.md has no '## {title}' section"
    return m.group(1)


def occurs_dedented(snippet: str, source: str) -> bool:
    """True if `snippet` equals some run of consecutive source lines once both are dedented."""
    want = snippet.rstrip("\n").split("\n")
    lines = source.split("\n")
    for i in range(len(lines) - len(want) + 1):
        if textwrap.dedent("\n".join(lines[i : i + len(want)])).split("\n") == want:
            return True
    return False


def test_readme_snippets_are_verbatim_from_tested_examples():
    readme = (REPO / "README.md").read_text()
    for title, (lang, examples) in SECTIONS.items():
        body = section(readme, title)
        blocks = re.findall(rf"```{lang}\n(.*?)```", body, re.S)
        assert blocks, f"README '## {title}' has no ```{lang} block"
        sources = [e.read_text() for e in examples]
        for b in blocks:
            assert any(occurs_dedented(b, s) for s in sources), (
                f"README '## {title}' snippet is not in {[str(e) for e in examples]}:\n{b}"
            )
        assert "```sh\n" in body, f"README '## {title}' does not show how to run its tests"
