"""Corpus scanning, structure-aware chunking (tree-sitter for code, sections for legal text) and the
SQLite corpus index that maps files, chunks, symbols and legal sections to memory blocks."""

from repos_index.chunking import analyze, chunk_file, detect_language
from repos_index.index import CorpusIndex, CrossRefHit, OutlineEntry, ReferenceHit, Section, SymbolHit, ingest
from repos_index.memory import BatchMemorySink, BlockSpan, MemorySink
from repos_index.pipeline import UpdateReport
from repos_index.records import Chunk, FileAnalysis
from repos_index.scan import ScannedFile, ScanResult

__all__ = [
    "BatchMemorySink",
    "BlockSpan",
    "Chunk",
    "CorpusIndex",
    "CrossRefHit",
    "FileAnalysis",
    "MemorySink",
    "OutlineEntry",
    "ReferenceHit",
    "ScanResult",
    "ScannedFile",
    "Section",
    "SymbolHit",
    "UpdateReport",
    "analyze",
    "chunk_file",
    "detect_language",
    "ingest",
]
