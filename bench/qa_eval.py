"""The reading benchmark: questions with known answers over a real corpus, per question and per method.

    python -m bench.qa_eval --set tenacity-dev --out bench/out/qa-tenacity-dev.json
    python -m bench.qa_eval --set dora --out bench/out/qa-dora.json
    python -m bench.qa_eval --set ai-act-dev --corpus /path/to/folder-with-the-text --out ...

Sets are `bench/qa/<set>.jsonl` (schema in `bench/qa/README.md`); each names its corpus in
`bench/qa/corpora.json` (a file of the shared data, an installed Python package, this repository, or a
folder given with `--corpus`). Methods, same model, same questions, same prompt around the context:
- `l2m`: the agent reading memory (`Agent.ask`, as `l2m ask` does);
- `oracle`: the evidence lines pasted as the context: the model's reading ceiling;
- `rag`: BM25 over 128-token chunks of the same files, the top 4 pasted (re-prompting);
- `none`: the question alone.
Per question it records: the evidence among the blocks read (l2m), the top citation on the evidence
(l2m: its first citation; rag: its best chunk) and the answer right (an expected phrase in the reply).
Writes JSON and a PNG beside it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import shutil
import tempfile
import time
from pathlib import Path

from rank_bm25 import BM25Okapi

from agent import Agent
from l2m_core.addressing import query_terms, terms
from l2m_core.generation import GreedyDecoder
from l2m_core.loading import load_model
from l2m_core.memory import pasted_prompt, reading_head
from l2m_core.settings import MemorySettings

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = REPO.parent / "shared"
METHODS = ("l2m", "oracle", "rag", "none")


def load_set(name: str) -> tuple[list[dict], dict]:
    path = HERE / "qa" / f"{name}.jsonl"
    if not path.is_file():
        raise SystemExit(f"no question set {path}")
    items = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    corpora = json.loads((HERE / "qa" / "corpora.json").read_text())
    family = next((c for prefix, c in corpora.items() if name == prefix or name.startswith(prefix + "-")), None)
    if family is None:
        raise SystemExit(f"bench/qa/corpora.json names no corpus for set {name}")
    return items, family


def corpus(spec: dict, work: Path, given: Path | None) -> tuple[Path, list[str]]:
    """(root, paths to ingest) of a set's corpus; files are copied so the store can live beside them."""
    root = work / "corpus"
    if spec["kind"] == "repo":
        return REPO, spec["paths"]
    if root.exists():  # kept from an earlier run (--work)
        return root, sorted(p.name for p in root.iterdir())
    if spec["kind"] == "package":
        found = importlib.util.find_spec(spec["name"])
        if found is None or not found.submodule_search_locations:
            raise SystemExit(f"the package {spec['name']} is not installed")
        installed = importlib.metadata.version(spec.get("dist", spec["name"]))  # markdown_it is markdown-it-py
        if installed != spec["version"]:
            raise SystemExit(f"the questions quote {spec['name']} {spec['version']}; {installed} is installed")
        shutil.copytree(Path(list(found.submodule_search_locations)[0]), root / spec["name"],
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        return root, [spec["name"]]
    source = given or (SHARED / spec["shared"] if "shared" in spec else Path(spec.get("default", "/nonexistent")))
    if not source.exists():
        raise SystemExit(f"this set's corpus is not here (to get it: {spec.get('get')}); give --corpus FILE_OR_DIR")
    if "sha256" in spec and source.is_file() and hashlib.sha256(source.read_bytes()).hexdigest() != spec["sha256"]:
        raise SystemExit(f"{source} is not the text the questions quote (sha256 differs)")
    if source.is_dir():
        shutil.copytree(source, root)
    else:
        root.mkdir()
        shutil.copy(source, root / source.name)
    return root, sorted(p.name for p in root.iterdir())


def corpus_files(root: Path, paths: list[str]) -> list[Path]:
    def texts(folder: Path) -> list[Path]:
        return sorted(q for q in folder.rglob("*") if q.suffix in (".py", ".txt", ".md"))

    return [p for rel in paths for p in ([root / rel] if (root / rel).is_file() else texts(root / rel))]


def chunks(files: list[Path], root: Path, tokenizer, size: int = 128) -> list[tuple[str, int, int, str]]:
    """(file, first line, last line, text) windows of `size` tokens over the ingested files."""
    out = []
    for path in files:
        text = path.read_text(encoding="utf-8")
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for i in range(0, len(offsets), size):
            a, b = offsets[i][0], offsets[min(i + size, len(offsets)) - 1][1]
            out.append((str(path.relative_to(root)), text.count("\n", 0, a) + 1, text.count("\n", 0, b) + 1, text[a:b]))
    return out


def prompt_ids(tokenizer, question: str, context: str | None) -> list[int]:
    """The l2m prompt with `context` pasted where memory is read (or the question alone)."""
    if context is None:
        text = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                             tokenize=False)
    else:
        text = pasted_prompt(tokenizer, question, context)
    return tokenizer(text, add_special_tokens=False).input_ids


def evidence_spans(agent: Agent, item: dict) -> list[tuple[str, int, int]]:
    """(file, first line, last line) of each place the answer is stated."""
    spans = [(e["file"], *e["lines"]) for e in item.get("evidence", [])]
    if not spans and "section" in item:
        found = agent.index.find_section(item["section"])
        if not found:
            raise SystemExit(f"{item['id']}: the index has no {item['section']}")
        spans = [(found[0].path, found[0].line_start, found[0].line_end)]
    if not spans and "file" in item:
        spans = [(item["file"], 1, 10**9)]
    return spans


def evidence_text(root: Path, spans: list[tuple[str, int, int]]) -> str | None:
    """The evidence lines, each passage under its file's name as `rag` pastes its chunks (without the name
    no reader could answer "which file" questions: the oracle would not be a ceiling)."""
    parts = []
    for file, a, b in spans:
        if b >= 10**9:
            return None  # a whole file is not a passage: no oracle for this question
        lines = (root / file).read_text(encoding="utf-8").splitlines()
        parts.append(f"[{file}]\n" + "\n".join(lines[a - 1:b]))
    return "\n\n".join(parts)


def overlaps(citation: tuple[str, int, int] | None, spans: list[tuple[str, int, int]]) -> bool:
    return citation is not None and any(citation[0] == f and citation[1] <= b and citation[2] >= a
                                        for f, a, b in spans)


def answered(text: str, item: dict) -> bool:
    return any(a.lower() in text.lower() for a in item["answer_any"])


def run(items: list[dict], root: Path, paths: list[str], store: Path, max_tokens: int,
        methods: tuple[str, ...], settings: dict, log: Path, reader: Path | None = None) -> tuple[list[dict], float]:
    """Ask every question by every method (l2m reading with `reader`, if given); each record is also appended
    to `log` as it is made (JSON lines), so a long run stopped early keeps what it measured."""
    lm = load_model(None)
    if settings.get("reading_head") == "chat":  # blocks written after the chat turn and reading instruction
        settings = {**settings, "reading_head": reading_head(lm.tokenizer)}
    agent = Agent.open(root, store, lm, settings=MemorySettings().replace(**settings), overrides=settings,
                       reader=reader)
    start = time.perf_counter()
    agent.ingest([root / p for p in paths])
    ingest_s = time.perf_counter() - start
    if not agent.memory.meta:
        raise SystemExit("nothing was ingested")
    windows = chunks(corpus_files(root, paths), root, lm.tokenizer)
    stemmed = agent.memory.settings.stemmed_lexical  # rag's BM25 is the one l2m addresses with
    bm25 = BM25Okapi([terms(w[3], stemmed) for w in windows])
    decoder = GreedyDecoder(lm)
    records = []
    for item in items:
        spans = evidence_spans(agent, item)
        evidence_blocks = {b for f, a, z in spans for b in agent.memory.blocks_for(f, a, min(z, 10**8))}
        for method in methods:
            t = time.perf_counter()
            record = {"id": item["id"], "kind": item.get("kind"), "method": method}
            if method == "l2m":
                answer = agent.ask(item["question"], max_new_tokens=max_tokens)
                top = answer.citations[0] if answer.citations else None
                read = {b for ids in answer.read_set.values() for b in ids}
                text, citation = answer.text, top and (top.source, top.line_start, top.line_end)
                record.update(evidence_read=bool(evidence_blocks & read), label=top.label if top else None,
                              cited=[[c.source, c.line_start, c.line_end, c.label, round(c.weight, 4),
                                      bool(evidence_blocks.intersection(c.block_ids))] for c in answer.citations],
                              lexical_on_evidence=[b in evidence_blocks for b in answer.lexical])
            elif method == "oracle":
                context = evidence_text(root, spans)
                if context is None:
                    continue
                text, citation = decoder.generate(prompt_ids(lm.tokenizer, item["question"], context), max_tokens), None
            elif method == "rag":
                scores = bm25.get_scores(query_terms(item["question"], stemmed))
                best = sorted(range(len(windows)), key=lambda i: -scores[i])[:4]
                context = "\n\n".join(f"[{windows[i][0]}]\n{windows[i][3]}" for i in sorted(best))
                text = decoder.generate(prompt_ids(lm.tokenizer, item["question"], context), max_tokens)
                citation = windows[best[0]][:3]
            else:
                text, citation = decoder.generate(prompt_ids(lm.tokenizer, item["question"], None), max_tokens), None
            record.update(answer=text, citation=citation, answer_ok=answered(text, item),
                          citation_ok=overlaps(citation, spans) if citation else None,
                          seconds=round(time.perf_counter() - t, 3))
            records.append(record)
            with log.open("a") as f:
                f.write(json.dumps(record) + "\n")
            marks = "".join(f" {k} {'ok' if record[k] else '--'}" for k in ("evidence_read", "citation_ok")
                            if record.get(k) is not None)
            print(f"{item['id']} {method}: answer {'ok' if record['answer_ok'] else '--'}{marks} {text[:70]!r}",
                  flush=True)
    agent.close()
    return records, ingest_s


def summarize(records: list[dict]) -> dict:
    summary = {}
    for method in METHODS:
        mine = [r for r in records if r["method"] == method]
        if not mine:
            continue
        summary[method] = {"questions": len(mine), "answer": sum(r["answer_ok"] for r in mine),
                           "mean_seconds": round(sum(r["seconds"] for r in mine) / len(mine), 3)}
        if method in ("l2m", "rag"):
            summary[method]["citation"] = sum(bool(r["citation_ok"]) for r in mine)
        if method == "l2m":
            summary[method]["evidence_read"] = sum(r["evidence_read"] for r in mine)
    return summary


def plot(summary: dict, title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bars = [(f"{m}\nanswer", s["answer"], s["questions"]) for m, s in summary.items()]
    bars += [(f"{m}\ncitation", s["citation"], s["questions"]) for m, s in summary.items() if "citation" in s]
    bars += [("l2m\nevidence read", summary["l2m"]["evidence_read"], summary["l2m"]["questions"])] \
        if "l2m" in summary else []
    fig, ax = plt.subplots(figsize=(1.1 * len(bars) + 2, 3.6))
    ax.bar([b[0] for b in bars], [b[1] / b[2] for b in bars], color="#4477aa")
    for i, (_, k, n) in enumerate(bars):
        ax.text(i, k / n + 0.02, f"{k}/{n}", ha="center", fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("share of questions")
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", required=True, help="a question set in bench/qa (without .jsonl)")
    parser.add_argument("--out", type=Path, required=True, help="JSON to write (a PNG is written beside it)")
    parser.add_argument("--corpus", type=Path, help="the set's corpus, where it is not shipped or installed")
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset of " + ",".join(METHODS))
    parser.add_argument("--limit", type=int, help="only the first N questions (for trying a change)")
    parser.add_argument("--work", type=Path, help="keep the corpus copy and the store here and reuse them "
                        "(a later run ingests only what changed); default: a temporary folder")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE",
                        help="a memory setting for l2m (e.g. reread_tokens=192, stemmed_lexical=true; "
                        "reading_head=chat writes blocks after the chat turn: a new --work); repeatable")
    parser.add_argument("--reader", type=Path, help="l2m reads with this trained reader (l2m train --task reader)")
    args = parser.parse_args()
    settings = {}
    for pair in args.setting:
        name, _, value = pair.partition("=")
        default = getattr(MemorySettings(), name, None)
        if default is None or not value:
            raise SystemExit(f"not a memory setting: {pair}")
        settings[name] = value.lower() in ("1", "true") if isinstance(default, bool) else type(default)(value)
    methods = tuple(m for m in args.methods.split(",") if m)
    if unknown := set(methods) - set(METHODS):
        raise SystemExit(f"unknown methods: {', '.join(sorted(unknown))}")
    items, spec = load_set(args.set)
    items = items[:args.limit] if args.limit else items
    work = args.work or Path(tempfile.mkdtemp(prefix="l2m-qa-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        root, paths = corpus(spec, work, args.corpus)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        log = args.out.with_suffix(".records.jsonl")
        log.unlink(missing_ok=True)
        records, ingest_s = run(items, root, paths, work / "store", args.max_tokens, methods, settings, log,
                               args.reader)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = summarize(records)
    args.out.write_text(json.dumps({"set": args.set, "settings": settings, "reader": args.reader and str(args.reader),
                                    "ingest_seconds": round(ingest_s, 1),
                                    "summary": summary, "records": records}, indent=2))
    plot(summary, f"{args.set}: {len(items)} questions, default model", args.out.with_suffix(".png"))
    print(f"{'method':8} {'answer':>8} {'citation':>9} {'evidence':>9} {'s/question':>11}")
    for method, s in summary.items():
        n = s["questions"]
        cite = f"{s['citation']}/{n}" if "citation" in s else "-"
        read = f"{s['evidence_read']}/{n}" if "evidence_read" in s else "-"
        print(f"{method:8} {s['answer']:>5}/{n} {cite:>9} {read:>9} {s['mean_seconds']:>11}")


if __name__ == "__main__":
    main()
