"""Compressed keys and values of a document being ingested, held on disk until its transaction, not in RAM.

A document is written in one transaction after it is encoded (a reader never sees part of it, and the write
lock is not held while the model runs), so every block's compressed keys and values wait for that moment:
about 12 KB per token with the default model, 0.8 GB for a 70K-token file. `KVSpill` keeps them in an unnamed
temporary file in the store directory (nothing is left behind if the process dies); the block's `SpilledKV`
reads them back as the transaction inserts it, so the peak RSS of ingest does not grow with document size.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path


class KVSpill:
    """An append-only temporary file of blocks' per-layer (keys, values) blobs."""

    def __init__(self, directory: Path | None = None):
        self._file = tempfile.TemporaryFile(dir=directory, buffering=0)
        self._end = 0

    def add(self, kv: Sequence[tuple[bytes, bytes]]) -> SpilledKV:
        """Append one block's blobs; the handle that reads them back."""
        data = memoryview(b"".join(blob for pair in kv for blob in pair))
        start, written = self._end, 0
        while written < len(data):
            written += os.pwrite(self._file.fileno(), data[written:], start + written)
        self._end += len(data)
        return SpilledKV(self, start, [(len(k), len(v)) for k, v in kv])

    def read(self, offset: int, size: int) -> bytes:
        data = os.pread(self._file.fileno(), size, offset)
        if len(data) != size:
            raise OSError(f"spill file ended early ({len(data)} of {size} bytes at {offset})")
        return data

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> KVSpill:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class SpilledKV(Sequence[tuple[bytes, bytes]]):
    """One block's per-layer (keys, values), read from its spill file when iterated."""

    def __init__(self, spill: KVSpill, offset: int, sizes: list[tuple[int, int]]):
        self.spill, self.offset, self.sizes = spill, offset, sizes

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, layer):
        return list(self)[layer]

    def __iter__(self) -> Iterator[tuple[bytes, bytes]]:
        data, at = self.spill.read(self.offset, sum(k + v for k, v in self.sizes)), 0
        for k, v in self.sizes:
            yield data[at:at + k], data[at + k:at + k + v]
            at += k + v
