"""Tools the agent calls on a repository; each is a small typed function usable on its own.

`workspace` confines paths to the repository root; `view` and `search` read; `edits` stages
str_replace/insert/create edits, shows one diff and applies them, with `journal` for undo;
`refactor` (over a `symbols.SymbolIndex`, e.g. `pyindex.PythonIndex`) renames, adds parameters and
moves definitions; `plan` runs multi-step edit plans; `run` runs commands under a `RunPolicy`;
`apply` applies and tests; `toolbox.Toolbox` bundles the tools for an agent or LangChain.
"""
