"""Per-language tree-sitter knowledge: which nodes are definitions, how they are named, and the
queries that find references, imports and top-level variables.

Every grammar comes from its own wheel (`tree-sitter-python`, ...); nothing is fetched at run time.
Queries use one convention: `@ref.<kind>` captures a referenced name, `@path` an import path string,
`@import` an import statement handled by the language's `import_targets`, `@name` a variable name.
Reference kinds: `call` (a plain name called), `method` (a member called: `x.add()`), `type`, `inherit`,
`import` (a name imported from a module) and `name` (any other use).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache

from tree_sitter import Language, Node, Parser, Query, QueryCursor

CONTAINER_KINDS = frozenset({"class", "struct", "interface", "trait", "impl", "enum", "namespace", "module", "record"})
FUNCTION_KINDS = frozenset({"function", "method", "constructor", "macro"})

Described = tuple[str, str, str | None]  # (kind, name, scope prefix such as a Go receiver type)


def text(node: Node | None) -> str:
    return node.text.decode("utf-8", "replace") if node is not None and node.text is not None else ""


def descendants(node: Node) -> Iterator[Node]:
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.named_children))


def named(node: Node, kind: str) -> Described | None:
    name = node.child_by_field_name("name")
    return (kind, text(name), None) if name is not None else None


@dataclass(frozen=True)
class LanguageSpec:
    name: str
    module: str
    loader: str
    definitions: dict[str, str]
    references: str
    imports: str
    variables: str = ""
    wrappers: frozenset[str] = frozenset()
    comments: frozenset[str] = frozenset({"comment"})
    describe: Callable[[Node, str], Described | None] = named
    import_targets: Callable[[str, Node], list[str]] = field(default=lambda capture, node: _path_target(node))


@dataclass(frozen=True)
class Grammar:
    """A spec with its compiled parser and queries."""

    spec: LanguageSpec
    language: Language
    definitions: Query
    references: Query
    imports: Query
    variables: Query | None

    def parser(self) -> Parser:
        return Parser(self.language)

    @staticmethod
    def captures(query: Query, node: Node) -> dict[str, list[Node]]:
        return QueryCursor(query).captures(node)


def _path_target(node: Node) -> list[str]:
    raw = text(node).strip()
    return [raw.strip("\"'`<>")] if raw else []


# --- naming helpers -----------------------------------------------------------------------------

_FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function", "generator_function"})


def _describe_js(node: Node, kind: str) -> Described | None:
    if node.type in ("lexical_declaration", "variable_declaration"):
        for declarator in node.named_children:
            value = declarator.child_by_field_name("value")
            if declarator.type == "variable_declarator" and value is not None and value.type in _FUNCTION_VALUES:
                return "function", text(declarator.child_by_field_name("name")), None
        return None
    return named(node, kind)


def _describe_go(node: Node, kind: str) -> Described | None:
    if node.type == "method_declaration":
        receiver = node.child_by_field_name("receiver")
        types = (text(n) for n in descendants(receiver) if n.type == "type_identifier") if receiver else iter(())
        scope = next(types, None)
        return "method", text(node.child_by_field_name("name")), scope
    if node.type == "type_spec":
        shape = node.child_by_field_name("type")
        kind = {"struct_type": "struct", "interface_type": "interface"}.get(shape.type if shape else "", "type")
    return named(node, kind)


def _describe_rust(node: Node, kind: str) -> Described | None:
    if node.type == "impl_item":
        target = node.child_by_field_name("type")
        while target is not None and target.type in ("generic_type", "scoped_type_identifier", "reference_type"):
            target = target.child_by_field_name("type") or target.child_by_field_name("name")
        return ("impl", text(target), None) if target is not None else None
    if node.type == "mod_item" and node.child_by_field_name("body") is None:
        return None  # `mod foo;` names another file: an import, not a definition here
    return named(node, kind)


_DECLARATOR_WRAPPERS = frozenset(
    {"pointer_declarator", "reference_declarator", "function_declarator", "parenthesized_declarator",
     "attributed_declarator", "array_declarator"}
)


def _innermost_declarator(node: Node | None) -> Node | None:
    while node is not None and node.type in _DECLARATOR_WRAPPERS:
        node = node.child_by_field_name("declarator") or (node.named_children[0] if node.named_children else None)
    return node


def _describe_c_family(node: Node, kind: str) -> Described | None:
    if node.type == "function_definition":
        declarator = _innermost_declarator(node.child_by_field_name("declarator"))
        if declarator is None:
            return None
        if declarator.type == "qualified_identifier":
            full = text(declarator).replace(" ", "")
            scope, _, name = full.rpartition("::")
            return "method", name, scope.replace("::", ".") or None
        return kind, text(declarator), None
    if node.type == "type_definition":
        declarator = _innermost_declarator(node.child_by_field_name("declarator"))
        return (kind, text(declarator), None) if declarator is not None else None
    if node.type in ("struct_specifier", "union_specifier", "enum_specifier", "class_specifier"):
        if node.child_by_field_name("body") is None:
            return None  # a use such as `struct strbuf *sb`, not a definition
    return named(node, kind)


def _python_imports(capture: str, node: Node) -> list[str]:
    """`import a.b` -> a.b; `from .m import x` -> .m.x and .m (x may be a module or a name)."""
    if node.type == "import_statement":
        return [text(n.child_by_field_name("name") if n.type == "aliased_import" else n)
                for n in node.children_by_field_name("name")]
    module = text(node.child_by_field_name("module_name"))
    targets = []
    for name_node in node.children_by_field_name("name"):
        if name_node.type == "aliased_import":
            name_node = name_node.child_by_field_name("name")
        targets.append(module + ("" if module.endswith(".") else ".") + text(name_node))
    return [*targets, module]


def _rust_imports(capture: str, node: Node) -> list[str]:
    if capture == "mod":
        return [f"mod {text(node)}"]
    path = text(node)
    return [path.split("::{", 1)[0].split(" as ", 1)[0].strip()]


def _java_imports(capture: str, node: Node) -> list[str]:
    body = text(node).removeprefix("import").strip().removesuffix(";").strip()
    return [body.removeprefix("static").strip()]


# --- the languages ------------------------------------------------------------------------------

_JS_DEFINITIONS = {
    "class_declaration": "class",
    "function_declaration": "function",
    "generator_function_declaration": "function",
    "method_definition": "method",
    "lexical_declaration": "function",
    "variable_declaration": "function",
}
_JS_REFERENCES = """
(call_expression function: (identifier) @ref.call)
(call_expression function: (member_expression property: (property_identifier) @ref.method))
(new_expression constructor: (identifier) @ref.call)
(new_expression constructor: (member_expression property: (property_identifier) @ref.call))
(import_specifier name: (identifier) @ref.import)
"""
_JSX_REFERENCES = """
(jsx_opening_element name: (identifier) @ref.call)
(jsx_self_closing_element name: (identifier) @ref.call)
"""
_JS_IMPORTS = """
(import_statement source: (string (string_fragment) @path))
(export_statement source: (string (string_fragment) @path))
((call_expression function: (identifier) @_f arguments: (arguments (string (string_fragment) @path)))
 (#eq? @_f "require"))
"""
_JS_VARIABLES = """
(program (lexical_declaration (variable_declarator name: (identifier) @name)))
(program (variable_declaration (variable_declarator name: (identifier) @name)))
(program (export_statement declaration: (lexical_declaration (variable_declarator name: (identifier) @name))))
"""
_TS_DEFINITIONS = {
    **_JS_DEFINITIONS,
    "abstract_class_declaration": "class",
    "interface_declaration": "interface",
    "type_alias_declaration": "type",
    "enum_declaration": "enum",
    "internal_module": "namespace",
}
_TS_REFERENCES = _JS_REFERENCES + """
(type_identifier) @ref.type
(extends_clause value: (identifier) @ref.inherit)
"""
_C_REFERENCES = """
(call_expression function: (identifier) @ref.call)
(call_expression function: (field_expression field: (field_identifier) @ref.method))
(type_identifier) @ref.type
"""
_C_DEFINITIONS = {
    "function_definition": "function",
    "struct_specifier": "struct",
    "union_specifier": "struct",
    "enum_specifier": "enum",
    "type_definition": "type",
    "preproc_function_def": "macro",
}

SPECS: dict[str, LanguageSpec] = {
    spec.name: spec
    for spec in (
        LanguageSpec(
            name="python",
            module="tree_sitter_python",
            loader="language",
            definitions={"class_definition": "class", "function_definition": "function"},
            references="""
(call function: (identifier) @ref.call)
(call function: (attribute attribute: (identifier) @ref.method))
(class_definition superclasses: (argument_list (identifier) @ref.inherit))
(class_definition superclasses: (argument_list (attribute attribute: (identifier) @ref.inherit)))
(type (identifier) @ref.type)
(type (attribute attribute: (identifier) @ref.type))
(decorator (identifier) @ref.call)
(decorator (attribute attribute: (identifier) @ref.call))
(import_from_statement name: (dotted_name (identifier) @ref.import))
(import_from_statement name: (aliased_import name: (dotted_name (identifier) @ref.import)))
""",
            imports="(import_statement) @import (import_from_statement) @import",
            variables="(module (expression_statement (assignment left: (identifier) @name)))",
            wrappers=frozenset({"decorated_definition"}),
            import_targets=_python_imports,
        ),
        LanguageSpec(
            name="javascript",
            module="tree_sitter_javascript",
            loader="language",
            definitions=_JS_DEFINITIONS,
            references=_JS_REFERENCES + _JSX_REFERENCES + "(class_heritage (identifier) @ref.inherit)",
            imports=_JS_IMPORTS,
            variables=_JS_VARIABLES,
            wrappers=frozenset({"export_statement"}),
            describe=_describe_js,
        ),
        LanguageSpec(
            name="typescript",
            module="tree_sitter_typescript",
            loader="language_typescript",
            definitions=_TS_DEFINITIONS,
            references=_TS_REFERENCES,
            imports=_JS_IMPORTS,
            variables=_JS_VARIABLES,
            wrappers=frozenset({"export_statement"}),
            describe=_describe_js,
        ),
        LanguageSpec(
            name="tsx",
            module="tree_sitter_typescript",
            loader="language_tsx",
            definitions=_TS_DEFINITIONS,
            references=_TS_REFERENCES + _JSX_REFERENCES,
            imports=_JS_IMPORTS,
            variables=_JS_VARIABLES,
            wrappers=frozenset({"export_statement"}),
            describe=_describe_js,
        ),
        LanguageSpec(
            name="go",
            module="tree_sitter_go",
            loader="language",
            definitions={"function_declaration": "function", "method_declaration": "method", "type_spec": "type"},
            references="""
(call_expression function: (identifier) @ref.call)
(call_expression function: (selector_expression field: (field_identifier) @ref.call))
(type_identifier) @ref.type
""",
            imports="(import_spec path: (_) @path)",
            variables="""
(source_file (const_declaration (const_spec name: (identifier) @name)))
(source_file (var_declaration (var_spec name: (identifier) @name)))
""",
            wrappers=frozenset({"type_declaration"}),
            describe=_describe_go,
        ),
        LanguageSpec(
            name="rust",
            module="tree_sitter_rust",
            loader="language",
            definitions={
                "struct_item": "struct",
                "enum_item": "enum",
                "union_item": "struct",
                "trait_item": "trait",
                "impl_item": "impl",
                "function_item": "function",
                "mod_item": "module",
                "macro_definition": "macro",
                "type_item": "type",
            },
            references="""
(call_expression function: (identifier) @ref.call)
(call_expression function: (field_expression field: (field_identifier) @ref.method))
(call_expression function: (scoped_identifier path: (identifier) @ref.type name: (identifier) @ref.method))
(macro_invocation macro: (identifier) @ref.call)
(type_identifier) @ref.type
(use_list (identifier) @ref.import)
(use_declaration argument: (scoped_identifier name: (identifier) @ref.import))
""",
            imports="(use_declaration argument: (_) @use) (mod_item name: (identifier) @mod !body)",
            variables="""
(source_file (const_item name: (identifier) @name))
(source_file (static_item name: (identifier) @name))
""",
            comments=frozenset({"line_comment", "block_comment", "attribute_item"}),
            describe=_describe_rust,
            import_targets=_rust_imports,
        ),
        LanguageSpec(
            name="java",
            module="tree_sitter_java",
            loader="language",
            definitions={
                "class_declaration": "class",
                "interface_declaration": "interface",
                "enum_declaration": "enum",
                "record_declaration": "record",
                "annotation_type_declaration": "interface",
                "method_declaration": "method",
                "constructor_declaration": "constructor",
            },
            references="""
(method_invocation name: (identifier) @ref.method)
(method_invocation object: (identifier) @ref.name)
(type_identifier) @ref.type
(import_declaration (scoped_identifier name: (identifier) @ref.import))
""",
            imports="(import_declaration) @import",
            comments=frozenset({"line_comment", "block_comment"}),
            import_targets=_java_imports,
        ),
        LanguageSpec(
            name="c",
            module="tree_sitter_c",
            loader="language",
            definitions=_C_DEFINITIONS,
            references=_C_REFERENCES,
            imports="(preproc_include path: (_) @path)",
            variables="(translation_unit (preproc_def name: (identifier) @name))",
            describe=_describe_c_family,
        ),
        LanguageSpec(
            name="cpp",
            module="tree_sitter_cpp",
            loader="language",
            definitions={**_C_DEFINITIONS, "class_specifier": "class", "namespace_definition": "namespace"},
            references=_C_REFERENCES + """
(call_expression function: (qualified_identifier name: (identifier) @ref.call))
(call_expression function: (template_function name: (identifier) @ref.call))
""",
            imports="(preproc_include path: (_) @path)",
            variables="(translation_unit (preproc_def name: (identifier) @name))",
            wrappers=frozenset({"template_declaration"}),
            describe=_describe_c_family,
        ),
    )
}


@cache
def grammar(language: str) -> Grammar:
    """The compiled grammar for a language in `SPECS` (loaded once per process)."""
    spec = SPECS[language]
    lang = Language(getattr(importlib.import_module(spec.module), spec.loader)())
    definitions = "[" + " ".join(f"({node_type})" for node_type in spec.definitions) + "] @def"
    return Grammar(
        spec=spec,
        language=lang,
        definitions=Query(lang, definitions),
        references=Query(lang, spec.references),
        imports=Query(lang, spec.imports),
        variables=Query(lang, spec.variables) if spec.variables else None,
    )
