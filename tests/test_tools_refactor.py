"""The tree-sitter symbol index and the structured refactorings: rename, add a parameter, move a definition."""

from __future__ import annotations

import pytest
from tools_helpers import write_repo

from l2m_core.errors import L2MError
from tools.edits import EditSet
from tools.pyindex import PythonIndex
from tools.refactor import add_parameter, move_definition, rename_symbol
from tools.symbols import Reference, Span, Symbol
from tools.workspace import Workspace


def staged(tmp_path, files: dict[str, str]) -> tuple[EditSet, PythonIndex]:
    edits = EditSet(Workspace(write_repo(tmp_path / "repo", files)))
    return edits, PythonIndex(edits)


# -- the index -----------------------------------------------------------------------------------

def test_index_finds_definitions_with_kind_parent_and_extent(tmp_path):
    edits, index = staged(tmp_path, {"m.py": "LIMIT = 3\n\n\n@cache\ndef f(x):\n    def inner():\n        pass\n"
                                             "\n\nclass C:\n    def f(self):\n        return f(1)\n"})
    found = {(s.name, s.kind, s.parent) for s in index.outline("m.py")}
    assert found == {("LIMIT", "variable", None), ("f", "function", None), ("inner", "function", "f"),
                     ("C", "class", None), ("f", "method", "C")}
    top_f = next(s for s in index.find_symbol("f") if s.kind == "function")
    assert top_f.span == Span("m.py", 5, 4, 5, 5)
    assert (top_f.extent.line, top_f.extent.end_line) == (4, 7)  # the decorator belongs to the definition


def test_index_references_exclude_keywords_and_module_paths(tmp_path):
    edits, index = staged(tmp_path, {
        "pricing.py": "def total(x):\n    return x\n",
        "use.py": "import pricing\nfrom pricing import total\n\nobj.total\ntotal(1)\npricing.total(2)\ng(total=3)\n",
    })
    refs = [(r.span.line, r.context) for r in index.find_references("total")]
    assert refs == [(2, "import"), (4, "attribute"), (5, "call"), (6, "call")]
    assert index.find_references("pricing") == [Reference("pricing", Span("use.py", 6, 0, 6, 7), "name")]


def test_index_counts_columns_in_characters(tmp_path):
    edits, index = staged(tmp_path, {"u.py": 's = "é日本"; f(s)\n\ndef f(v):\n    return v\n'})
    [ref] = index.find_references("f")
    assert ref.span.column == 11  # 15 in bytes


def test_index_sees_staged_edits_and_skips_broken_files(tmp_path):
    edits, index = staged(tmp_path, {"a.py": "def old():\n    pass\n"})
    (edits.ws.root / "bin.py").write_bytes(b"\x00\xff")
    assert index.find_symbol("old")
    edits.str_replace("a.py", "def old", "def fresh")
    assert not index.find_symbol("old") and index.find_symbol("fresh")
    with pytest.raises(L2MError, match="Python files only"):
        index.outline("README.md")


# -- rename --------------------------------------------------------------------------------------

RENAME_REPO = {
    "lib/__init__.py": "",
    "lib/core.py": "def helper(n):\n    return n + 1\n",
    "lib/use.py": "from lib.core import helper\n\n\ndef twice(n):\n    return helper(helper(n))\n",
    "app.py": "from lib import core\n\nprint(core.helper(1), 'helper')  # helper\n",
}


def test_rename_changes_definition_and_every_reference(tmp_path):
    edits, index = staged(tmp_path, RENAME_REPO)
    done = rename_symbol(edits, index, "helper", "bump")
    assert done.files == ["app.py", "lib/core.py", "lib/use.py"]
    assert edits.read_text("lib/core.py") == "def bump(n):\n    return n + 1\n"
    assert edits.read_text("lib/use.py").endswith("return bump(bump(n))\n")
    assert edits.read_text("app.py") == "from lib import core\n\nprint(core.bump(1), 'helper')  # helper\n"
    assert (edits.ws.root / "lib/core.py").read_text() == RENAME_REPO["lib/core.py"]  # staged only


@pytest.mark.parametrize("old, new, message", [
    ("helper", "twice", "twice is already defined at lib/use.py:4:5"),
    ("helper", "n", "n is already used at lib/core.py:1:12"),
    ("missing", "x", "no a definition named missing|no definition named missing"),
    ("helper", "class", "'class' is not a valid identifier"),
    ("helper", "two words", "not a valid identifier"),
])
def test_rename_refusals_stage_nothing(tmp_path, old, new, message):
    edits, index = staged(tmp_path, RENAME_REPO)
    with pytest.raises(L2MError, match=message):
        rename_symbol(edits, index, old, new)
    assert not edits


def test_rename_refuses_a_name_defined_twice(tmp_path):
    edits, index = staged(tmp_path, {"a.py": "def run():\n    pass\n", "b.py": "def run():\n    pass\n"})
    with pytest.raises(L2MError, match=r"run is defined 2 times \(a.py:1:5, b.py:1:5\)"):
        rename_symbol(edits, index, "run", "go")


class StaleIndex:
    """An index that still reports positions from before the file changed."""

    def find_symbol(self, name):
        return [Symbol(name, "function", Span("lib/core.py", 1, 4, 1, 10), Span("lib/core.py", 1, 0, 2, 16))
                ] if name == "helper" else []

    def find_references(self, name):
        return [Reference(name, Span("lib/use.py", 5, 30, 5, 36), "call")] if name == "helper" else []

    def outline(self, path):
        return []


def test_rename_with_a_stale_index_is_refused(tmp_path):
    edits, _ = staged(tmp_path, RENAME_REPO)
    with pytest.raises(L2MError, match="the index is out of date: helper is not at lib/use.py:5:31"):
        rename_symbol(edits, StaleIndex(), "helper", "bump")
    assert not edits


# -- add a parameter -----------------------------------------------------------------------------

@pytest.mark.parametrize("signature, default, expected", [
    ("def f(a, b):", None, "def f(a, b, c):"),
    ("def f():", None, "def f(c):"),
    ("def f(a, b=1):", None, "def f(a, b=1, *, c):"),
    ("def f(a, b=1):", "0", "def f(a, b=1, c=0):"),
    ("def f(a, *args):", None, "def f(a, *args, c):"),
    ("def f(a, **kw):", None, "def f(a, c, **kw):"),
    ("def f(a, b=1, **kw):", None, "def f(a, b=1, *, c, **kw):"),
    ("def f(\n    a,\n    b,\n):", None, "def f(\n    a,\n    b, c,\n):"),
])
def test_add_parameter_keeps_the_signature_valid(tmp_path, signature, default, expected):
    edits, index = staged(tmp_path, {"m.py": f"{signature}\n    return 1\n"})
    add_parameter(edits, index, "f", "c", argument="7", default=default)
    text = edits.read_text("m.py")
    assert text.startswith(expected)
    compile(text, "m.py", "exec")


def test_add_parameter_updates_every_call_by_keyword(tmp_path):
    edits, index = staged(tmp_path, {
        "calc.py": "def area(w, h):\n    return w * h\n\n\n"
                   "class Box:\n    def size(self):\n        return self.size()\n",
        "use.py": "from calc import area\n\nhandlers = [area]\nprint(area(2, 3), area(*dims), area(w=1, h=2))\n",
    })
    done = add_parameter(edits, index, "area", "scale", argument="1.0")
    assert edits.read_text("calc.py").startswith("def area(w, h, scale):")
    assert edits.read_text("use.py").endswith(
        "print(area(2, 3, scale=1.0), area(*dims, scale=1.0), area(w=1, h=2, scale=1.0))\n")
    assert done.notes == ["use.py:3:13: area is used here without a plain call; not updated"]
    add_parameter(edits, index, "size", "unit", argument='"cm"')
    assert 'def size(self, unit):\n        return self.size(unit="cm")' in edits.read_text("calc.py")


def test_add_parameter_refusals(tmp_path):
    edits, index = staged(tmp_path, {"m.py": "def f(a):\n    return a\n\n\nf(1, c=2)\nLIMIT = 1\n"})
    with pytest.raises(L2MError, match="already has a parameter a"):
        add_parameter(edits, index, "f", "a", argument="1")
    with pytest.raises(L2MError, match="this call already passes c"):
        add_parameter(edits, index, "f", "c", argument="1")
    with pytest.raises(L2MError, match="needs the argument call sites pass, a default, or both"):
        add_parameter(edits, index, "f", "d")
    with pytest.raises(L2MError, match="no function or method named LIMIT"):
        add_parameter(edits, index, "LIMIT", "d", argument="1")
    assert not edits


# -- move a definition ---------------------------------------------------------------------------

MOVE_REPO = {
    "shop/__init__.py": "",
    "shop/prices.py": '"""Prices."""\n\nimport math\nfrom decimal import Decimal\n\nRATE = 2\n\n\n'
                      "def cents(x):\n    return Decimal(math.floor(x * 100))\n\n\n"
                      "def scaled(x):\n    return x * RATE\n\n\n"
                      "def doubled(x):\n    return cents(x) * 2\n",
    "shop/use.py": "from .prices import cents, doubled\nfrom shop import prices\n\n\n"
                   "def show(x):\n    return cents(x), prices.cents(x), doubled(x)\n",
    "main.py": "from shop.prices import cents\n\nprint(cents(1.5))\n",
}


def test_move_definition_fixes_imports_everywhere(tmp_path):
    edits, index = staged(tmp_path, MOVE_REPO)
    done = move_definition(edits, index, "cents", "shop/money.py")
    assert done.files == ["main.py", "shop/money.py", "shop/prices.py", "shop/use.py"]
    assert edits.read_text("shop/money.py") == (
        "import math\nfrom decimal import Decimal\n\n\ndef cents(x):\n    return Decimal(math.floor(x * 100))\n")
    prices = edits.read_text("shop/prices.py")
    assert prices.startswith('"""Prices."""\n\nfrom shop.money import cents\n\n\nRATE = 2\n')  # doubled uses it
    assert "def cents" not in prices and "import" not in prices.replace("from shop.money import", "")
    assert edits.read_text("shop/use.py") == (
        "from .prices import doubled\nfrom .money import cents\nfrom shop import prices\nfrom shop import money\n"
        "\n\ndef show(x):\n    return cents(x), money.cents(x), doubled(x)\n")
    assert edits.read_text("main.py") == "from shop.money import cents\n\nprint(cents(1.5))\n"
    for path in done.files:
        compile(edits.read_text(path), path, "exec")


def test_move_into_an_existing_file_that_imported_it(tmp_path):
    files = dict(MOVE_REPO, **{"shop/money.py": '"""Money."""\n\nfrom shop.prices import cents\n\n\n'
                                                "def euros(x):\n    return cents(x) / 100\n"})
    edits, index = staged(tmp_path, files)
    move_definition(edits, index, "cents", "shop/money.py")
    money = edits.read_text("shop/money.py")
    assert money.startswith('"""Money."""\n\nimport math\nfrom decimal import Decimal\n\n\ndef euros')
    assert "from shop.prices" not in money
    assert money.endswith("return cents(x) / 100\n\n\ndef cents(x):\n    return Decimal(math.floor(x * 100))\n")


def test_move_refuses_a_destination_that_imports_the_source(tmp_path):
    files = dict(MOVE_REPO, **{"shop/money.py": "from shop.prices import RATE\n\nFEE = RATE\n"})
    edits, index = staged(tmp_path, files)
    with pytest.raises(L2MError, match="import each other \\(it imports shop.prices from shop/prices.py"):
        move_definition(edits, index, "cents", "shop/money.py")
    assert not edits


def test_move_refuses_a_circular_import_and_non_top_level_names(tmp_path):
    files = dict(MOVE_REPO, **{"shop/use.py": "from shop.prices import scaled\n\nprint(scaled(1))\n",
                               "shop/prices.py": MOVE_REPO["shop/prices.py"] + "\n\nTWICE = scaled(2)\n"})
    edits, index = staged(tmp_path, files)
    with pytest.raises(L2MError, match="would make shop/prices.py and shop/other.py import each other"):
        move_definition(edits, index, "scaled", "shop/other.py")
    edits2, index2 = staged(tmp_path / "b", {"m.py": "class C:\n    def meth(self):\n        pass\n"})
    with pytest.raises(L2MError, match="no function or class or variable named meth"):
        move_definition(edits2, index2, "meth", "n.py")
    with pytest.raises(L2MError, match="not a Python file"):
        move_definition(edits, index, "cents", "shop/notes.txt")
    assert not edits
