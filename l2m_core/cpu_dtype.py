"""The dtype a model runs in on this CPU, measured once per machine.

bf16 matmuls ran 5x slower than fp32 on one of our CPUs (no native bf16: each product is converted) and 2x
faster on another (AMX / AVX512-BF16), so no fixed choice is right everywhere. `measured()` times one
512-token chunk through an MLP-sized projection in each dtype and keeps bf16 only where it is clearly
faster (fp32 is the exact one). The result is remembered in `$L2M_HOME/cpu-dtype.json` per CPU model,
torch version and thread count, so the measurement (well under a second) runs once per machine.
"""

from __future__ import annotations

import functools
import json
import platform
import time
from pathlib import Path

import torch

from l2m_core.paths import l2m_home

CANDIDATES = ("float32", "bfloat16")
SHAPE = (512, 576, 1536)   # a chunk of 512 tokens through the default model's MLP up-projection
MARGIN = 1.3               # bf16 is chosen only when fp32 takes at least this many times as long
FILE = "cpu-dtype.json"


def machine() -> str:
    """What the measurement depends on: the CPU model, torch's version and its thread count."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} | torch {torch.__version__} | {torch.get_num_threads()} threads"


def seconds_per_chunk(dtype: torch.dtype, repeats: int = 5) -> float:
    """Best-of-`repeats` seconds of one `SHAPE` matmul in `dtype` on the CPU."""
    tokens, width, out = SHAPE
    x, w = torch.randn(tokens, width, dtype=dtype), torch.randn(width, out, dtype=dtype)
    x @ w  # first call: allocation and kernel choice
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        x @ w
        best = min(best, time.perf_counter() - start)
    return best


@functools.cache
def measured() -> dict:
    """This machine's record: `{"machine", "seconds": {dtype: s}, "chosen"}`, read from the file or measured
    now and saved (a file that cannot be read or written is measured over, not an error)."""
    key, path = machine(), l2m_home() / FILE
    try:
        known = json.loads(path.read_text())
        if not isinstance(known, dict):
            known = {}
    except (OSError, ValueError):
        known = {}
    record = known.get(key)
    if not (isinstance(record, dict) and record.get("chosen") in CANDIDATES):
        seconds = {name: seconds_per_chunk(getattr(torch, name)) for name in CANDIDATES}
        chosen = "bfloat16" if seconds["float32"] >= MARGIN * seconds["bfloat16"] else "float32"
        record = {"machine": key, "seconds": {k: round(v, 6) for k, v in seconds.items()}, "chosen": chosen}
        try:
            path.write_text(json.dumps({**known, key: record}, indent=1))
        except OSError:
            pass
    return record


def fastest() -> torch.dtype:
    """fp32 or bf16, whichever this CPU runs a model in faster (see the module docstring)."""
    return getattr(torch, measured()["chosen"])
