"""Benchmark the corpus index on a real codebase: the installed `sqlalchemy` package source.

Measures indexing alone (no memory): a full index (files/s, chunks/s, lines/s), a re-index of the
unchanged tree, a re-index after touching one file (mtime only), and after editing one file (its
content changes, so it is re-chunked). The target for the last is under 2 s. The package is copied to
a temporary folder first, so the installed one is never modified.

    python bench/bench_index.py --out bench/out/index.json     # also writes bench/out/index.png
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from repos_index.index import CorpusIndex  # noqa: E402

TARGET_SECONDS = 2.0


def package_source(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise SystemExit(f"{name} is not installed")
    return Path(spec.origin).parent


def timed(function) -> tuple[float, object]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def bump_mtime(path: Path) -> None:
    stamp = path.stat().st_mtime_ns + 1_000_000_000
    os.utime(path, ns=(stamp, stamp))


def run(package: str, repeats: int) -> dict:
    source = package_source(package)
    with tempfile.TemporaryDirectory(prefix="bench-index-") as scratch:
        root = Path(scratch) / package
        shutil.copytree(source, root, ignore=shutil.ignore_patterns("__pycache__"))
        python_files = sorted(root.rglob("*.py"))
        lines = sum(p.read_bytes().count(b"\n") for p in python_files)
        edited = max(python_files, key=lambda p: p.stat().st_size)  # the worst case: the largest file
        relative = edited.relative_to(root).as_posix()
        edited_lines = edited.read_bytes().count(b"\n")

        full_runs = []
        for attempt in range(repeats):
            index = CorpusIndex(Path(scratch) / f"index-{attempt}.db", root)
            seconds, report = timed(lambda index=index: index.update(progress=False))
            full_runs.append(seconds)
        stats = index.stats()

        noop = [timed(lambda: index.update(progress=False))[0] for _ in range(repeats)]
        touch, edit = [], []
        for attempt in range(repeats):
            bump_mtime(edited)
            seconds, touched = timed(lambda: index.update(progress=False))
            assert touched.changed == [] and touched.unchanged == report.files_seen
            touch.append(seconds)
            with open(edited, "a") as handle:
                handle.write(f"\n# benchmark edit {attempt}\n")
            bump_mtime(edited)
            seconds, changed = timed(lambda: index.update(progress=False))
            assert changed.changed == [relative], changed.summary()
            edit.append(seconds)
        order_seconds, order = timed(index.ingest_order)

    full = statistics.median(full_runs)
    return {
        "benchmark": "corpus index of the installed package source",
        "package": package,
        "package_version": __import__(package).__version__,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "repeats": repeats,
        "corpus": {
            "files_indexed": report.files_seen,
            "python_files": len(python_files),
            "python_lines": lines,
            "skipped": {reason: len(paths) for reason, paths in report.skipped.items()},
            **stats,
        },
        "full_index": {
            "seconds": full,
            "seconds_all": full_runs,
            "files_per_s": report.files_seen / full,
            "chunks_per_s": stats["chunks"] / full,
            "lines_per_s": lines / full,
        },
        "reindex_unchanged_seconds": statistics.median(noop),
        "reindex_after_touch": {"file": relative, "seconds": statistics.median(touch), "seconds_all": touch},
        "reindex_after_edit": {
            "file": relative,
            "file_lines": edited_lines,
            "seconds": statistics.median(edit),
            "seconds_all": edit,
            "target_seconds": TARGET_SECONDS,
            "meets_target": statistics.median(edit) < TARGET_SECONDS,
        },
        "ingest_order_seconds": order_seconds,
        "ingest_order_files": len(order),
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["full index", "re-index\nunchanged", "re-index\n1 file touched", "re-index\n1 file edited"]
    values = [result["full_index"]["seconds"], result["reindex_unchanged_seconds"],
              result["reindex_after_touch"]["seconds"], result["reindex_after_edit"]["seconds"]]
    figure, axis = plt.subplots(figsize=(7, 4))
    bars = axis.bar(labels, values, color=["#4c72b0", "#55a868", "#55a868", "#c44e52"])
    axis.axhline(TARGET_SECONDS, color="grey", linestyle="--", label=f"re-index target ({TARGET_SECONDS:.0f} s)")
    for bar, value in zip(bars, values, strict=True):
        axis.annotate(f"{value:.2f} s", (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom")
    corpus = result["corpus"]
    axis.set_title(f"Indexing {result['package']} {result['package_version']}: {corpus['files_indexed']} files, "
                   f"{corpus['python_lines']:,} lines of Python")
    axis.set_ylabel("seconds")
    axis.set_ylim(0, max(values) * 1.15)
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/out/index.json"))
    parser.add_argument("--package", default="sqlalchemy")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    result = run(args.package, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    plot(result, args.out.with_suffix(".png"))
    full = result["full_index"]
    print(f"full index: {full['seconds']:.2f} s, {full['files_per_s']:.0f} files/s, "
          f"{full['chunks_per_s']:.0f} chunks/s, {full['lines_per_s']:.0f} lines/s")
    print(f"re-index unchanged: {result['reindex_unchanged_seconds']:.3f} s; one file touched: "
          f"{result['reindex_after_touch']['seconds']:.3f} s; one file edited "
          f"({result['reindex_after_edit']['file']}): {result['reindex_after_edit']['seconds']:.3f} s")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
