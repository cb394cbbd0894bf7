"""What one step of a plan may be, from the index and the request's own words: the model only chooses.

For one request (a clause of the task) `StepOptions` lists, for each argument a plan step can have, the
values the index and the request allow: the symbols the request names (else those the whole task names,
else all); the parameters a named function has (named whole, by a word that begins with the parameter's
name: "separator" names `sep`, or by the default value it has); the request's identifier-like words that
are not symbols yet (new names); the Python literals it spells (a few in words too: "an underscore" is
'_'); the .py paths it spells; and what it says a symbol does, when it says so after a colon or "saying
(that)" (a docstring in its own words). An action is offered only when each of its arguments has a value
to choose from or a grammar to decode it under (a docstring, a literal): a move needs a destination the
request spells, a new default a parameter the request names.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.schemas import Vocabulary, mentioned, words

# Words of plain English that are never a name the user means (articles, prepositions, pronouns, auxiliaries).
STOP_WORDS = frozenset("""a an the to of in on at for with from by into onto as and or but not no so than then
that this these those it its it's is are was were be been being do does did has have had will would should shall
can could may might must I i we you he she they me us them my our your their his her one now from instead please
there here what which who when where how all any each every some more most also just only very too""".split())
# Words that say what kind of edit is asked, which a 135M model otherwise takes for the new name ("rename f to
# docstring" explains "Describe f with a short docstring" well enough for it).
EDIT_WORDS = frozenset("""rename name names named call called move put add set change make use give document docstring
function functions method class parameter parameters argument arguments default defaults file module new""".split())
_LITERALS = re.compile(r"""(?<![\w.])(-?\d+(?:\.\d+)?|"[^"\\\n]{0,24}"|'[^'\\\n]{0,24}'|True|False|None)(?![\w.])""")
_PATHS = re.compile(r"[A-Za-z_][\w/]*\.py\b")
# Values a request may spell in words ("make the separator an underscore").
_WORD_LITERALS = {"underscore": "'_'", "hyphen": "'-'", "dash": "'-'", "space": "' '", "comma": "','",
                  "colon": "':'", "semicolon": "';'", "slash": "'/'", "period": "'.'", "dot": "'.'",
                  "zero": "0", "two": "2", "three": "3", "four": "4", "five": "5", "ten": "10"}
# What introduces a request's own description of a symbol: "f: it returns ...", "f saying that it ...".
_DESCRIBED = re.compile(r"(?::|\b(?:saying|says|explaining|stating|noting)\b(?:\s+that)?)\s+(?:it\s+)?(\w.*)$",
                        re.I)
ACTIONS = ("rename_symbol", "add_parameter", "set_default", "move_definition", "add_docstring")


def code_like(word: str, text: str) -> bool:
    """Whether `word` is written like code in `text`: with an underscore, a digit or an inner capital letter,
    in backticks, or followed by `=` or `(`."""
    return (any(c == "_" or c.isdigit() for c in word) or any(c.isupper() for c in word[1:])
            or re.search(rf"`{re.escape(word)}`|\b{re.escape(word)}\s*[=(]", text) is not None)


def prefer_code(names: list[str], text: str) -> list[str]:
    """The `names` written like code in `text` when there are some, else all of them."""
    return [n for n in names if code_like(n, text)] or names


def after_verb(text: str) -> list[str]:
    """The words of `text` without its first unless that is written like code: a request's first word is its
    verb or subject ("Explain ...", "Slugify ...")."""
    said = words(text)
    return said[1:] if said and not code_like(said[0], text) else said


def literals(text: str) -> list[str]:
    """The Python literals `text` spells, once each, in order; then those it names in words ("an underscore",
    "a space") when it spells none."""
    spelled = _LITERALS.findall(text)
    named = [] if spelled else [_WORD_LITERALS[w.lower()] for w in re.findall(r"\w+", text)
                                if w.lower() in _WORD_LITERALS]
    return list(dict.fromkeys(spelled + named))


def description(text: str, symbol: str) -> str | None:
    """What `text` says `symbol` does, as a docstring, when it says so after the symbol with a colon or "saying
    (that)" ("Document f: it returns the count" -> "Returns the count."), in at least three words."""
    at = re.search(rf"\b{re.escape(symbol)}\b", text)
    found = _DESCRIBED.search(text, at.end()) if at else None
    if found is None or len(found[1].split()) < 3:
        return None
    said = found[1].strip().rstrip(".")
    return said[0].upper() + said[1:] + "."


@dataclass
class StepOptions:
    """The values each argument of a step for `request` may take (see the module docstring)."""

    request: str
    symbols: list[str]
    functions: list[str]
    top_level: list[str]
    new_names: list[str]
    literals: list[str]
    paths: list[str]
    docstrings: dict[str, str] = field(default_factory=dict)  # symbol -> what the request says it does
    parameters: dict[str, dict[str, str | None]] = field(default_factory=dict)  # function -> its parameters
    homes: dict[str, str] = field(default_factory=dict)  # top-level name -> the file defining it

    @classmethod
    def of(cls, request: str, task: str, vocab: Vocabulary,
           parameters_of: Callable[[str], dict[str, str | None]], home_of: Callable[[str], str | None]) -> StepOptions:
        def named(names: tuple[str, ...]) -> list[str]:
            return prefer_code(mentioned(request, names) or mentioned(task, names) or list(names), request)

        functions = named(vocab.functions)
        symbols = set(vocab.symbols)
        params = {f: parameters_of(f) for f in functions}
        taken = symbols | {p for ps in params.values() for p in ps}
        spelled = _PATHS.findall(request)
        taken |= {part for path in spelled for part in re.split(r"[/.]", path)}
        text = _LITERALS.sub(" ", re.sub(r"'s\b", "", request))  # no name in a possessive's s or a literal
        new = [w for w in after_verb(text) if w not in taken and w.lower() not in STOP_WORDS | EDIT_WORDS]
        top_level = named(vocab.top_level)
        homes = {name: home for name in top_level if (home := home_of(name)) is not None}
        paths = [p for p in dict.fromkeys(spelled) if p not in homes.values()]
        symbols_named = named(vocab.symbols)
        docstrings = {s: d for s in symbols_named if (d := description(request, s)) is not None}
        return cls(request, symbols_named, functions, top_level, prefer_code(new, request), literals(request),
                   paths, docstrings, params, homes)

    def named_parameters(self, function: str) -> list[str]:
        """The parameters of `function` the request names: whole, by a word beginning with the name, or by the
        default value it has ("end with '.' rather than '!'" names the parameter whose default is '!')."""
        params = self.parameters.get(function, {})
        said = mentioned(self.request, tuple(params))
        spoken = words(_PATHS.sub(" ", self.request))  # a path's parts begin no parameter's name
        return [p for p, value in params.items()
                if p in said or (len(p) >= 3 and any(w.lower().startswith(p.lower()) for w in spoken))
                or (value is not None and any(same_value(v, value) for v in self.literals))]

    def new_parameters(self, function: str) -> list[str]:
        """New names for a parameter of `function` (not one it has)."""
        return [n for n in self.new_names if n not in self.parameters.get(function, {})]

    def defaults(self, function: str, parameter: str) -> list[str]:
        """Literals the request spells for a new default of `parameter`: not the value it has (however quoted)."""
        current = self.parameters.get(function, {}).get(parameter)
        return [v for v in self.literals if current is None or not same_value(v, current)]

    def actions(self) -> list[str]:
        """The actions whose arguments all have something to choose from (see the module docstring)."""
        possible = {
            "rename_symbol": bool(self.symbols and [n for n in self.new_names if n not in self.symbols]),
            "add_parameter": any(self.new_parameters(f) for f in self.functions),
            "set_default": any(self.named_parameters(f) for f in self.functions),
            "move_definition": bool(self.top_level and self.paths),
            "add_docstring": bool(self.symbols),
        }
        return [a for a in ACTIONS if possible[a]]


def same_value(a: str, b: str) -> bool:
    """Whether two Python literals (as source) are equal: '!' and "!" are."""
    try:
        return ast.literal_eval(a) == ast.literal_eval(b)
    except (ValueError, SyntaxError):
        return a == b
