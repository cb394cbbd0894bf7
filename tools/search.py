"""Regex search over the repository's text files, with path filters (gitignore-style patterns)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import pathspec

from l2m_core.errors import L2MError
from tools.symbols import TextSource


@dataclass(frozen=True)
class Match:
    path: str
    line: int
    text: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.text}"


def search_text(
    source: TextSource,
    pattern: str,
    paths: Sequence[str] = (),
    ignore_case: bool = False,
    max_matches: int = 200,
) -> list[Match]:
    """Lines matching the regular expression `pattern`, in file and line order, at most `max_matches`.

    `paths` keeps only files matching any of these gitignore-style patterns ("*.py", "src/",
    "tests/**/test_*.py"); binary and huge files are skipped. Raises `L2MError` for a bad regex.
    """
    try:
        regex = re.compile(pattern, re.IGNORECASE if ignore_case else 0)
    except re.error as exc:
        raise L2MError(f"bad regular expression {pattern!r}: {exc}") from None
    wanted = pathspec.GitIgnoreSpec.from_lines(paths) if paths else None
    matches: list[Match] = []
    for rel in source.list_files():
        if wanted is not None and not wanted.match_file(rel):
            continue
        try:
            text = source.read_text(rel)
        except L2MError:  # binary, undecodable or huge: not searchable text
            continue
        for number, line in enumerate(text.splitlines(), 1):
            if regex.search(line):
                matches.append(Match(rel, number, line.strip()[:300]))
                if len(matches) >= max_matches:
                    return matches
    return matches
