"""How each task grades an answer: 1.0 right, 0.0 wrong, or a fraction for several needles.

- passkey: the number appears in the output (not as part of a longer number).
- babilong: BABILong's rule (their `compare_answers`): take the lower-cased first sentence of the output,
  cut before any `<context>` or `<example>` the model starts to write; of the task's answer labels it
  names, ignoring those the question itself names, the target must be the only one. (Their code also
  splits at 'Question' after lower-casing, which never matches; we keep their effective rule.)
- niah: RULER's `string_match_all`: the fraction of expected values found, case-insensitively.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from agent.evals.generators import Sample


def passkey_score(answers: list[str], output: str) -> float:
    return float(all(re.search(rf"(?<!\d){re.escape(a)}(?!\d)", output) for a in answers))


def _first_sentence(output: str) -> str:
    text = output.lower().split(".")[0]
    for marker in ("<context>", "<example>"):
        text = text.split(marker)[0]
    return text


def babilong_correct(target: str, output: str, question: str, labels: Iterable[str]) -> bool:
    """BABILong's `compare_answers`: the target is the one label the answer's first sentence names."""
    answer = _first_sentence(output)
    names = {label.lower() for label in labels}
    asked = {label for label in names if label in question.lower()}
    named = {label for label in names if label in answer} - asked
    return named == {target.lower()}


def string_match_all(answers: list[str], output: str) -> float:
    lowered = output.lower()
    return sum(a.lower() in lowered for a in answers) / len(answers)


_SCORERS: dict[str, Callable[[Sample, str], float]] = {
    "passkey": lambda s, out: passkey_score(s.answers, out),
    "babilong": lambda s, out: float(babilong_correct(s.answers[0], out, s.question, s.labels)),
    "niah": lambda s, out: string_match_all(s.answers, out),
}


def score(sample: Sample, output: str) -> float:
    """The sample's task's score of `output` (the model's answer text), in [0, 1]."""
    return _SCORERS[sample.task](sample, output)
