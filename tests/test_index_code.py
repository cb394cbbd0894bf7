"""Code chunking with tree-sitter, per language on the fixture repositories, and the project's own tree."""

from __future__ import annotations

from pathlib import Path

import pytest
from index_helpers import FIXTURES, FakeMemory

from l2m_core.errors import L2MError
from repos_index.chunking import analyze, chunk_file, detect_language
from repos_index.index import CorpusIndex

# language -> (a definition and its qualified name and kind, the file defining it, the file using it)
CASES = {
    "python": (("Square.area", "method"), "shapes/geometry.py", "app.py"),
    "javascript": (("Calculator.add", "method"), "lib/math.js", "index.js"),
    "typescript": (("UserStore.add", "method"), "src/models.ts", "src/service.ts"),
    "go": (("Cart.Add", "method"), "cart/cart.go", "main.go"),
    "rust": (("Point.distance", "method"), "src/geometry.rs", "src/main.rs"),
    "java": (("Greeter.greet", "method"), "src/main/java/com/example/Greeter.java",
             "src/main/java/com/example/App.java"),
    "c": (("strbuf_append", "function"), "lib/strbuf.c", "main.c"),
    "cpp": (("ds.Counter", "class"), "include/stack.hpp", "src/main.cpp"),
}

# The outline of one file per language: (kind, qualified name, first line, last line); the defining
# file of CASES, except for C++, whose out-of-class method definitions are the interesting case.
OUTLINES = {
    "python": [("module", None, 1, 6), ("class", "Shape", 9, 16), ("method", "Shape.area", 12, 13),
               ("method", "Shape.describe", 15, 16), ("class", "Square", 19, 24),
               ("method", "Square.__init__", 20, 21), ("method", "Square.area", 23, 24),
               ("function", "make_square", 27, 29), ("function", "circle_area", 32, 33)],
    "javascript": [("class", "Calculator", 1, 11), ("method", "Calculator.constructor", 3, 5),
                   ("method", "Calculator.add", 7, 10), ("function", "add", 13, 15),
                   ("function", "multiply", 17, 17)],
    "typescript": [("type", "UserId", 1, 1), ("enum", "Role", 3, 6), ("interface", "User", 8, 12),
                   ("class", "UserStore", 14, 24), ("method", "UserStore.add", 17, 19),
                   ("method", "UserStore.get", 21, 23)],
    "go": [("module", None, 1, 2), ("struct", "Item", 4, 8), ("struct", "Cart", 10, 13),
           ("function", "NewCart", 15, 18), ("method", "Cart.Add", 20, 23), ("method", "Cart.Total", 25, 32)],
    "rust": [("struct", "Point", 1, 5), ("trait", "Shape", 7, 9), ("impl", "Point", 11, 19),
             ("method", "Point.new", 12, 14), ("method", "Point.distance", 16, 18), ("function", "origin", 21, 23)],
    "java": [("module", None, 1, 3), ("class", "Greeter", 5, 15), ("constructor", "Greeter.Greeter", 8, 10),
             ("method", "Greeter.greet", 12, 14)],
    "c": [("module", None, 1, 4), ("function", "strbuf_init", 6, 9), ("function", "strbuf_append", 11, 16)],
    "cpp": [("module", None, 1, 1), ("namespace", "ds", 3, 9), ("method", "ds.Counter.increment", 5, 5),
            ("method", "ds.Counter.value", 7, 7)],
}


@pytest.fixture(scope="module")
def indexes(tmp_path_factory) -> dict[str, CorpusIndex]:
    db_dir = tmp_path_factory.mktemp("code-index")
    built = {}
    for language in CASES:
        index = CorpusIndex(db_dir / f"{language}.db", FIXTURES / language)
        report = index.update(progress=False)
        assert report.errors == {} and report.files_seen >= 2
        built[language] = index
    return built


@pytest.mark.parametrize("language", sorted(CASES))
def test_outline_is_definition_granular_with_enclosing_context(indexes, language):
    path = "src/counter.cpp" if language == "cpp" else CASES[language][1]
    outline = [(e.kind, e.qualname, e.line_start, e.line_end) for e in indexes[language].outline(path)]
    assert outline == OUTLINES[language]


@pytest.mark.parametrize("language", sorted(CASES))
def test_symbols_references_and_dependency_order(indexes, language):
    (qualname, kind), defining, using = CASES[language]
    index = indexes[language]
    [hit] = index.find_symbol(qualname)
    assert (hit.path, hit.kind) == (defining, kind)
    name = qualname.rsplit(".", 1)[-1]
    assert using in {r.path for r in index.find_references(name)}
    assert defining in index.file_graph()[using]
    order = index.ingest_order()
    assert order.index(defining) < order.index(using)


def test_imports_resolve_to_files_per_language(indexes):
    expected = {
        "python": ("app.py", {"shapes/geometry.py"}),
        "javascript": ("index.js", {"lib/math.js"}),
        "typescript": ("src/view.tsx", {"src/models.ts", "src/service.ts"}),
        "go": ("main.go", {"cart/cart.go"}),
        "rust": ("src/lib.rs", {"src/geometry.rs"}),
        "java": ("src/main/java/com/example/Greeter.java", {"src/main/java/com/example/util/Strings.java"}),
        "c": ("main.c", {"lib/strbuf.h", "lib/strbuf.c"}),
        "cpp": ("src/counter.cpp", {"include/stack.hpp"}),
    }
    for language, (path, dependencies) in expected.items():
        assert indexes[language].file_graph()[path] == dependencies, language


def test_chunk_spans_point_at_the_definition_text():
    path = FIXTURES / "python" / "shapes" / "geometry.py"
    text = path.read_text()
    data = text.encode()
    lines = text.split("\n")
    for chunk in chunk_file(path):
        body = data[chunk.byte_start:chunk.byte_end].decode()
        assert body.startswith(lines[chunk.line_start - 1].strip())
        assert body.rstrip().endswith(lines[chunk.line_end - 1].strip())
    decorated = next(c for c in chunk_file(path) if c.name == "make_square")
    assert data[decorated.byte_start:].startswith(b"@functools.cache")  # the decorator belongs to it
    assert decorated.title == "def make_square(side: float) -> Square:"


def test_definitions_inside_functions_stay_in_their_function():
    source = "def outer():\n    def inner():\n        return 1\n    class Local:\n        pass\n    return inner\n"
    analysis = analyze(source, "python")
    assert [(c.kind, c.name) for c in analysis.chunks] == [("function", "outer")]
    assert [s.name for s in analysis.symbols] == ["outer"]


def test_a_block_between_two_definitions_is_labelled_by_the_one_holding_more_of_it(tmp_path):
    """A block that ends one function and starts the next, its middle line in the blank lines between them,
    still names a definition: the one holding more of its lines (a block is never labelled by nothing
    while it holds a function's body)."""
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "reg.py").write_text(
        "def register(name):\n    _seen.add(name)\n    return name\n\n\n\nclass Taken(Exception):\n    pass")
    index = CorpusIndex(tmp_path / "index.db", tmp_path / "repo")
    index.update(FakeMemory(lines_per_block=8), progress=False)  # one block: lines 1-8, middle line 4 is blank
    labels = [e.label for e in index.enclosing(index.blocks_for("reg.py")).values()]
    assert labels == ["register"]


def test_a_block_between_two_methods_is_labelled_by_the_method_holding_more_of_it(tmp_path):
    """Between two methods the class holds a block's middle line, yet the block is about the methods: the
    one holding more of its lines names it ("Which static method ..." is then answered with a method, not the
    class). A block mostly of the class's own lines (its docstring) stays the class's."""
    (tmp_path / "repo").mkdir()
    (tmp_path / "repo" / "clock.py").write_text(
        'class Clock:\n    """Times things."""\n    def start(self):\n        self.t = 1\n        return self.t\n\n'
        "    @staticmethod\n    def format(t):\n        return str(t)\n")
    index = CorpusIndex(tmp_path / "index.db", tmp_path / "repo")
    index.update(FakeMemory(lines_per_block=4), progress=False)  # lines 1-4, 5-8 (middle line 6 blank), 9
    labels = [e.label for e in index.enclosing(index.blocks_for("clock.py")).values()]
    assert labels == ["Clock", "Clock.format", "Clock.format"]


def test_top_level_variables_are_symbols_and_calls_are_references():
    analysis = analyze("LIMIT = 3\n\ndef f():\n    return g(LIMIT)\n", "python")
    assert {(s.name, s.kind) for s in analysis.symbols} == {("LIMIT", "variable"), ("f", "function")}
    assert [(r.name, r.kind, r.line) for r in analysis.references] == [("g", "call", 4)]


def test_other_languages_fall_back_to_line_windows():
    source = "\n".join(f"puts {i}" for i in range(150))
    chunks = chunk_file(source, "ruby")
    assert [c.kind for c in chunks] == ["lines"] * 3
    assert chunks[0].line_start == 1 and chunks[-1].line_end == 150
    assert all(a.line_end < b.line_start for a, b in zip(chunks, chunks[1:], strict=False))
    assert detect_language("tools/build.rb") == "rb"
    assert [c.kind for c in chunk_file(FIXTURES / "docs" / "build.sh")] == ["lines"]


def test_broken_code_still_yields_the_definitions_that_parse():
    analysis = analyze("def ok():\n    return 1\n\ndef broken(:\n    pass\n\nclass Fine:\n    pass\n", "python")
    assert {"ok", "Fine"} <= {c.name for c in analysis.chunks}


def test_chunk_file_needs_a_language_for_text():
    with pytest.raises(L2MError, match="language"):
        chunk_file("def f(): pass\n")


def test_the_projects_own_source_tree(tmp_path):
    """Index this repository: its own classes, references across modules, and its ignored .venv."""
    repo = Path(__file__).resolve().parents[1]
    index = CorpusIndex(tmp_path / "self.db", repo)
    report = index.update(paths=["repos_index", "tests/index_helpers.py", ".venv"], progress=False)
    assert report.errors == {}
    assert report.skipped.get("ignored") == [".venv/"]
    [corpus] = index.find_symbol("CorpusIndex")
    assert (corpus.path, corpus.kind) == ("repos_index/index.py", "class")
    assert {h.path for h in index.find_symbol("FakeMemory.live_sources")} == {"tests/index_helpers.py"}
    users = {r.path for r in index.find_references("analyze_code")}
    assert "repos_index/chunking.py" in users
    outline = index.outline("repos_index/records.py")
    assert ("method", "LineTable.innermost") in {(e.kind, e.qualname) for e in outline}
    order = index.ingest_order()
    assert order.index("repos_index/records.py") < order.index("repos_index/code.py")
    assert order.index("repos_index/pipeline.py") < order.index("repos_index/index.py")
    assert index.file_graph()["repos_index/index.py"] >= {"repos_index/schema.py", "repos_index/pipeline.py"}
