"""The default reader's training corpus: the Python source of a few installed packages and the EU AI Act,
split into one document per chapter (the reader's held-out split is by document).

    python bench/reader_corpus.py --ai-act /work/corpora/legal/ai_act.txt --out /tmp/reader-corpus

Nothing in it is the text of a question set (bench/qa: pathspec, the Cyber Resilience Act, DORA, this
repository), so a reader trained on it is measured on documents it never saw; click and the GDPR are kept for
independent checks and left out too. The AI Act is the plain-text conversion in `kristerhedfors/hacka.re`
(commit 8157f5695fb004324f2566de238cf3410a969ece, `scripts/EU_AI_Act_2024.md`, the repository that gave
the CRA text). OUT/corpus.json records the package versions and hashes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import re
import shutil
from pathlib import Path

PACKAGES = {"tenacity": "tenacity", "tqdm": "tqdm", "rich": "rich", "jsonpatch": "jsonpatch",
            "jsonpointer": "jsonpointer"}  # import name -> distribution
MAX_FILE_BYTES = 64_000  # larger files in these packages are data tables (emoji codes, licence lists)
AI_ACT_SHA256 = "80774a5c94be81b8daa4255a0d248121d609f4c1913b4f29a12539b0a9e5478f"
_CHAPTER = re.compile(r"^(?:# )?CHAPTER [IVXLC]+\b|^## ANNEX I:", re.M)
RECITAL_PART_LINES = 700


def copy_packages(out: Path) -> dict[str, str]:
    """Each package's .py files under OUT/<package>/ (a single-module package as one file), paths as users'
    repositories have them: a first reader trained on OUT/code/... answered "which file" questions about other
    corpora with code/... paths."""
    versions = {}
    for name, dist in PACKAGES.items():
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise SystemExit(f"{name} is not installed")
        versions[dist] = importlib.metadata.version(dist)
        folder = Path(spec.origin).parent
        files = sorted(folder.rglob("*.py")) if spec.submodule_search_locations else [Path(spec.origin)]
        for path in files:
            if path.stat().st_size <= MAX_FILE_BYTES and "__pycache__" not in path.parts:
                rel = path.relative_to(folder.parent) if spec.submodule_search_locations else Path(path.name)
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, out / rel)
    return versions


def split_act(text: str) -> list[str]:
    """The recitals in parts of about RECITAL_PART_LINES lines (cut at blank lines), then each chapter, then the
    annexes as one part."""
    starts = [m.start() for m in _CHAPTER.finditer(text)]
    recitals, parts = text[:starts[0]], [text[a:b] for a, b in zip(starts, starts[1:] + [len(text)], strict=True)]
    lines, cut, pieces = recitals.splitlines(keepends=True), 0, []
    while cut < len(lines):
        end = min(len(lines), cut + RECITAL_PART_LINES)
        while end < len(lines) and lines[end - 1].strip():
            end += 1
        pieces.append("".join(lines[cut:end]))
        cut = end
    return pieces + parts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ai-act", type=Path, required=True, help="the AI Act text (sha256 checked)")
    ap.add_argument("--out", type=Path, required=True, help="a new folder")
    args = ap.parse_args()
    act = args.ai_act.read_bytes()
    if hashlib.sha256(act).hexdigest() != AI_ACT_SHA256:
        raise SystemExit(f"{args.ai_act} is not the AI Act text this corpus is defined on (sha256 differs)")
    if args.out.exists():
        raise SystemExit(f"{args.out} exists; give a new folder")
    versions = copy_packages(args.out)
    legal = args.out / "ai_act"
    legal.mkdir(parents=True)
    parts = split_act(act.decode("utf-8"))
    for i, part in enumerate(parts):
        (legal / f"part{i:02d}.txt").write_text(part, encoding="utf-8")
    files = sorted(p for p in args.out.rglob("*") if p.is_file())
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(args.out)).encode() + b"\0" + path.read_bytes())
    record = {"packages": versions, "ai_act_sha256": AI_ACT_SHA256, "ai_act_parts": len(parts),
              "files": len(files), "characters": sum(len(p.read_text(encoding="utf-8")) for p in files),
              "sha256": digest.hexdigest()}
    (args.out / "corpus.json").write_text(json.dumps(record, indent=2))
    print(json.dumps(record))


if __name__ == "__main__":
    main()
