"""Corpus scanning, structure-aware chunking and the SQLite corpus index."""
