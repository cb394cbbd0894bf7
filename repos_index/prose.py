"""Markdown by headings, plain text by paragraphs, and fixed line windows for everything else."""

from __future__ import annotations

import re

from repos_index.records import Chunk, FileAnalysis, LineTable, ordered

_ATX = re.compile(r"^ {0,3}(?P<hashes>#{1,6})(?:\s+(?P<text>.*?))?\s*#*\s*$")
_SETEXT = re.compile(r"^ {0,3}(?P<rule>=+|-+)\s*$")
_FENCE = re.compile(r"^ {0,3}(?P<fence>`{3,}|~{3,})")
PARAGRAPH_CHARS = 1500  # plain-text paragraphs are grouped up to about this size
WINDOW_LINES = 60
_TITLE_CHARS = 120


def analyze_markdown(text: str) -> FileAnalysis:
    """One chunk per heading, spanning its section and nested under the enclosing heading."""
    lines = text.split("\n")
    table = LineTable(text)
    headings: list[tuple[int, int, str]] = []  # (line, level, text)
    fence: str | None = None
    for number, line in enumerate(lines, start=1):
        m = _FENCE.match(line)
        if m:
            marker = m["fence"]
            if fence is None:
                fence = marker[0] * len(marker)
            elif marker.startswith(fence):
                fence = None
            continue
        if fence is not None:
            continue
        m = _ATX.match(line)
        if m:
            headings.append((number, len(m["hashes"]), (m["text"] or "").strip()))
            continue
        m = _SETEXT.match(line)
        previous = lines[number - 2].strip() if number >= 2 else ""
        after_heading = bool(headings) and headings[-1][0] == number - 1
        if m and previous and not after_heading and _is_paragraph_start(lines, number - 1):
            headings.append((number - 1, 1 if m["rule"][0] == "=" else 2, previous))

    chunks: list[Chunk] = []
    last_text = _last_text_lines(lines)
    first_heading = headings[0][0] if headings else len(lines) + 1
    if any(line.strip() for line in lines[: first_heading - 1]):
        chunks.extend(_paragraph_chunks(lines, table, 1, first_heading - 1, len(chunks)))
    stack: list[tuple[int, int]] = []  # (level, index into chunks)
    for i, (line, level, title) in enumerate(headings):
        end = next((h[0] - 1 for h in headings[i + 1:] if h[1] <= level), len(lines))
        end = max(line, last_text[end])
        while stack and stack[-1][0] >= level:
            stack.pop()
        parent = chunks[stack[-1][1]] if stack else None
        qualname = f"{parent.qualname} / {title}" if parent is not None else title
        chunks.append(Chunk(len(chunks), "heading", title, qualname, None, line, end,
                            table.byte_start(line), table.byte_end(end), parent.ordinal if parent else None))
        stack.append((level, len(chunks) - 1))
    return FileAnalysis(language="markdown", chunks=ordered(chunks)[0])


def analyze_text(text: str) -> FileAnalysis:
    """Plain prose: paragraphs (blank-line separated), grouped up to `PARAGRAPH_CHARS`."""
    lines = text.split("\n")
    return FileAnalysis(language="text", chunks=_paragraph_chunks(lines, LineTable(text), 1, len(lines), 0))


def analyze_lines(text: str, language: str) -> FileAnalysis:
    """Windows of about `WINDOW_LINES` lines, cut at a blank line near the end of a window when there is one."""
    lines = text.split("\n")
    table = LineTable(text)
    last_text = _last_text_lines(lines)
    chunks: list[Chunk] = []
    start = 1
    while start <= len(lines):
        end = min(start + WINDOW_LINES - 1, len(lines))
        if end < len(lines):
            blank = next((n for n in range(end, end - WINDOW_LINES // 3, -1) if not lines[n - 1].strip()), None)
            end = blank or end
        body_end = last_text[end]
        if body_end >= start:
            first = next(n for n in range(start, body_end + 1) if lines[n - 1].strip())
            chunks.append(Chunk(len(chunks), "lines", None, None, lines[first - 1].strip()[:_TITLE_CHARS], first,
                                body_end, table.byte_start(first), table.byte_end(body_end)))
        start = end + 1
    return FileAnalysis(language=language, chunks=chunks)


def _is_paragraph_start(lines: list[str], number: int) -> bool:
    """A setext heading's text is a single line following a blank line (or the file start)."""
    return number == 1 or not lines[number - 2].strip()


def _last_text_lines(lines: list[str]) -> list[int]:
    """Index `n` -> the last line <= n that holds text (0 when none)."""
    last = [0] * (len(lines) + 1)
    for number in range(1, len(lines) + 1):
        last[number] = number if lines[number - 1].strip() else last[number - 1]
    return last


def _paragraph_chunks(lines: list[str], table: LineTable, first: int, last: int, ordinal: int) -> list[Chunk]:
    paragraphs: list[tuple[int, int]] = []
    start = None
    for number in range(first, last + 2):
        has_text = number <= last and bool(lines[number - 1].strip())
        if has_text and start is None:
            start = number
        elif not has_text and start is not None:
            paragraphs.append((start, number - 1))
            start = None
    chunks: list[Chunk] = []
    group: list[tuple[int, int]] = []
    size = 0
    for paragraph in paragraphs + [(0, 0)]:
        length = table.byte_end(paragraph[1]) - table.byte_start(paragraph[0]) if paragraph[0] else 0
        if group and (not paragraph[0] or size + length > PARAGRAPH_CHARS):
            s, e = group[0][0], group[-1][1]
            chunks.append(Chunk(ordinal + len(chunks), "paragraph", None, None, lines[s - 1].strip()[:_TITLE_CHARS],
                                s, e, table.byte_start(s), table.byte_end(e)))
            group, size = [], 0
        group.append(paragraph)
        size += length
    return chunks
