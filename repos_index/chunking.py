"""Pick the analyser for a file: tree-sitter code, legal structure, Markdown, plain text or line windows."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from l2m_core.errors import L2MError
from repos_index.code import CODE_LANGUAGES, analyze_code
from repos_index.legal import analyze_legal, looks_legal
from repos_index.prose import analyze_lines, analyze_markdown, analyze_text
from repos_index.records import Chunk, FileAnalysis

_BY_SUFFIX = {
    ".py": "python", ".pyi": "python", ".pyw": "python",
    ".js": "javascript", ".mjs": "javascript", ".cjs": "javascript", ".jsx": "javascript",
    ".ts": "typescript", ".mts": "typescript", ".cts": "typescript", ".tsx": "tsx",
    ".go": "go", ".rs": "rust", ".java": "java",
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".ipp": "cpp", ".inl": "cpp",
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown",
    ".txt": "text", ".text": "text", ".rst": "text", "": "text",
}
# Raised whenever an analyser finds other structure in the same text (a parser fix). An index written by
# another version analyses every file again on its next full update; memory keeps their blocks.
ANALYZER_VERSION = "4"
PROSE_LANGUAGES = frozenset({"legal", "markdown", "text"})
LANGUAGES = CODE_LANGUAGES | PROSE_LANGUAGES


def detect_language(path: str | os.PathLike[str], text: str | None = None) -> str:
    """The language of a file from its suffix; a text file whose content has legal headings is "legal".

    Files of other languages (shell, YAML, Ruby, ...) get their suffix as language and line-window chunks.
    """
    suffix = PurePosixPath(str(path)).suffix.lower()
    language = _BY_SUFFIX.get(suffix, suffix.lstrip(".") or "text")
    if language == "text" and text is not None and looks_legal(text):
        return "legal"
    return language


def analyze(text: str, language: str) -> FileAnalysis:
    """Chunks, symbols, references, imports and cross-references of one file's text."""
    if language in CODE_LANGUAGES:
        return analyze_code(text, language)
    if language == "legal":
        return analyze_legal(text)
    if language == "markdown":
        return analyze_markdown(text)
    if language == "text":
        return analyze_text(text)
    return analyze_lines(text, language)


def chunk_file(source: Path | str, language: str | None = None) -> list[Chunk]:
    """Chunk a file (a `Path`, read from disk) or a text (a `str`, which then needs `language`)."""
    if isinstance(source, Path):
        try:
            text = source.read_bytes().decode("utf-8", errors="replace")
        except OSError as exc:
            raise L2MError(f"cannot read {source}: {exc.strerror or exc}") from exc
        return analyze(text, language or detect_language(source, text)).chunks
    if language is None:
        raise L2MError("chunking a text needs its language (or pass a Path)")
    return analyze(source, language).chunks
