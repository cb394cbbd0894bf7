"""Loading the default model: the safetensors cache l2m keeps vs transformers' own GGUF path.

    python bench/bench_load.py --out bench/out/load.json

Each path runs in a fresh process (so peak RSS is its own), in the same run, on the same machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, resource, time
t = time.perf_counter()
{load}
print(json.dumps({{"seconds": time.perf_counter() - t,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""
CACHE = "from l2m_core.loading import load_model; load_model(None, device='cpu')"
GGUF = """import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from l2m_core import provision
g = provision.default_gguf_path()
AutoTokenizer.from_pretrained(str(g.parent), gguf_file=g.name)
AutoModelForCausalLM.from_pretrained(str(g.parent), gguf_file=g.name, dtype=torch.float32)"""


def measure(load: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE.format(load=load)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/load.json"))
    args = parser.parse_args()
    measure(CACHE)  # builds the cache if it is missing, so the timed run below reads it
    result = {"safetensors_cache": measure(CACHE), "gguf": measure(GGUF)}
    result["speedup"] = result["gguf"]["seconds"] / result["safetensors_cache"]["seconds"]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
