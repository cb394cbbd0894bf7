"""Questions with known answers over a real corpus, scored on the answer text and on its citation.

    python -m bench.qa_eval --set dora --out bench/out/qa-dora.json
    python -m bench.qa_eval --set repo --out bench/out/qa-repo.json

Sets (`bench/qa/*.jsonl`): `dora` asks which obligation the EU DORA regulation sets (the citation must
fall inside the expected Article, located by the corpus index), `repo` asks where things are defined in
this repository (the citation must name the expected file); `repo-dev` is a second such set, for trying
changes before they are measured on `repo`. Methods, same model and questions:
`l2m` (the agent reading memory), `none` (the question alone), `rag` (BM25 over 128-token chunks of the
same files, top 4 pasted into the prompt; its citation is the best chunk).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from rank_bm25 import BM25Okapi

from agent import Agent
from agent.evals.decoding import GreedyDecoder
from l2m_core.addressing import terms
from l2m_core.loading import load_model

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DORA = REPO.parent / "shared" / "data" / "legal" / "eu_dora_2022_2554.txt"
REPO_PATHS = ["l2m_core", "agent", "cli", "tools", "repos_index"]
INSTRUCTION = "Answer the question using the context. Answer briefly."


def corpus(name: str, work: Path) -> tuple[Path, list[str]]:
    """(root, paths to ingest) for a question set; DORA is copied so its store can live beside it."""
    if name == "dora":
        root = work / "dora"
        root.mkdir()
        shutil.copy(DORA, root / DORA.name)
        return root, [DORA.name]
    return REPO, REPO_PATHS


def chunks(root: Path, paths: list[str], tokenizer, size: int = 128) -> list[tuple[str, int, int, str]]:
    """(file, first line, last line, text) windows of `size` tokens over the ingested files."""
    out = []
    files = [p for rel in paths
             for p in ([root / rel] if (root / rel).is_file() else sorted((root / rel).rglob("*.py")))]
    for path in files:
        text = path.read_text(encoding="utf-8")
        offsets = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        for i in range(0, len(offsets), size):
            a, b = offsets[i][0], offsets[min(i + size, len(offsets)) - 1][1]
            out.append((str(path.relative_to(root)), text.count("\n", 0, a) + 1, text.count("\n", 0, b) + 1, text[a:b]))
    return out


def prompt_ids(tokenizer, question: str, context: str | None) -> list[int]:
    content = f"{INSTRUCTION}\n\nContext:\n{context}\n\nQuestion: {question}" if context else question
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)
    return tokenizer(text, add_special_tokens=False).input_ids


def expected_span(agent: Agent, item: dict) -> tuple[str, int, int]:
    if "section" in item:
        found = agent.index.find_section(item["section"])
        if not found:
            raise SystemExit(f"{item['id']}: the index has no {item['section']}")
        return found[0].path, found[0].line_start, found[0].line_end
    if not (REPO / item["file"]).is_file():
        raise SystemExit(f"{item['id']}: {item['file']} no longer exists; update the question set")
    return item["file"], 1, 10**9


def cited(citation: tuple[str, int, int] | None, span: tuple[str, int, int]) -> bool:
    return citation is not None and citation[0] == span[0] and citation[1] <= span[2] and citation[2] >= span[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=["dora", "repo", "repo-dev"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-tokens", type=int, default=48)
    args = parser.parse_args()
    items = [json.loads(line) for line in (HERE / "qa" / f"{args.set}.jsonl").read_text().splitlines() if line]
    lm = load_model(None)
    work = Path(tempfile.mkdtemp(prefix="l2m-qa-"))
    records = []
    try:
        root, paths = corpus(args.set, work)
        agent = Agent.open(root, work / "store", lm)
        start = time.perf_counter()
        agent.ingest([root / p for p in paths])
        ingest_s = time.perf_counter() - start
        windows = chunks(root, paths, lm.tokenizer)
        bm25 = BM25Okapi([terms(w[3]) for w in windows])
        decoder = GreedyDecoder(lm)
        for item in items:
            span = expected_span(agent, item)
            t = time.perf_counter()
            answer = agent.ask(item["question"], max_new_tokens=args.max_tokens)
            top = answer.citations[0] if answer.citations else None
            runs = {"l2m": (answer.text, top and (top.source, top.line_start, top.line_end), time.perf_counter() - t)}
            t = time.perf_counter()
            runs["none"] = (decoder.generate(prompt_ids(lm.tokenizer, item["question"], None), args.max_tokens),
                            None, time.perf_counter() - t)
            t = time.perf_counter()
            scores = bm25.get_scores(terms(item["question"]))
            best = sorted(range(len(windows)), key=lambda i: -scores[i])[:4]
            context = "\n\n".join(f"[{windows[i][0]}]\n{windows[i][3]}" for i in sorted(best))
            text = decoder.generate(prompt_ids(lm.tokenizer, item["question"], context), args.max_tokens)
            runs["rag"] = (text, windows[best[0]][:3], time.perf_counter() - t)
            for method, (text, citation, seconds) in runs.items():
                records.append({"id": item["id"], "method": method, "answer": text, "citation": citation,
                                "answer_ok": any(a.lower() in text.lower() for a in item["answer_any"]),
                                "citation_ok": cited(citation, span), "seconds": round(seconds, 3)})
        agent.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {}
    for method in ("l2m", "rag", "none"):
        mine = [r for r in records if r["method"] == method]
        summary[method] = {"answer": sum(r["answer_ok"] for r in mine),
                           "citation": sum(r["citation_ok"] for r in mine), "questions": len(mine),
                           "mean_seconds": round(sum(r["seconds"] for r in mine) / len(mine), 3)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"set": args.set, "ingest_seconds": ingest_s, "summary": summary,
                                    "records": records}, indent=2))
    print(f"{'method':8} {'answer':>8} {'citation':>9} {'s/question':>11}")
    for method, s in summary.items():
        n = s["questions"]
        print(f"{method:8} {s['answer']:>5}/{n} {s['citation']:>6}/{n} {s['mean_seconds']:>11}")


if __name__ == "__main__":
    main()
