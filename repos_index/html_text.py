"""HTML -> paragraphs and headings (BeautifulSoup on lxml), without the page's boilerplate.

Dropped: scripts, styles, forms, navigation, asides, the page's header and footer (an article's own stay), hidden
elements, and elements whose role, id or class names a cookie notice, consent dialog, menu, breadcrumb,
sidebar or share bar. When the page marks its content (`<main>`, `role="main"`, a single `<article>`), only that
is read. Block elements become pieces; `<h1>`-`<h6>` (and `role="heading"`) are headings; ordered list
items get their number as the reader sees it ("1.", "(a)"); a table row becomes one line, except a point
laid out as a row of its label and its text (as EUR-Lex does), which reads "(a) text".
"""

from __future__ import annotations

import re

from repos_index.documents import BadDocument, Piece, letters, roman

_DROP_TAGS = frozenset({"script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "form",
                        "button", "select", "input", "textarea", "nav", "aside", "dialog", "head"})
_PAGE_PARTS = frozenset({"header", "footer"})  # the page's banner and footer; inside an article, its own
_DROP_ROLES = frozenset({"navigation", "banner", "contentinfo", "search", "dialog", "alertdialog", "menu", "menubar",
                         "complementary"})
_BOILERPLATE_WORDS = frozenset({"cookie", "cookies", "consent", "gdpr", "banner", "breadcrumb", "breadcrumbs", "navbar",
                                "nav", "navigation", "menu", "sidebar", "share", "sharing", "social", "footer",
                                "masthead", "newsletter", "popup", "modal", "skip", "toolbar"})
_BOILERPLATE_PARTS = re.compile(r"cookie|consent|gdpr", re.IGNORECASE)
_BLOCKS = frozenset({"p", "div", "section", "article", "main", "li", "dt", "dd", "blockquote", "pre", "figcaption",
                     "caption", "address", "body", "ul", "ol", "dl", "table", "tbody", "thead", "tfoot", "hr",
                     "center", "fieldset", "details", "summary", "figure"})
_HEADINGS = {f"h{n}": n for n in range(1, 7)}
_POINT_LABEL = re.compile(r"^(?:\(\w{1,4}\)|\d+[a-z]?\.?|[a-z]\)|[ivx]+\))$")


def html_pieces(data: bytes) -> list[Piece]:
    from bs4 import BeautifulSoup

    try:
        soup = BeautifulSoup(data, "lxml")
    except Exception as exc:  # lxml copes with nearly anything; a failure here means the bytes are not HTML
        raise BadDocument(f"unreadable HTML ({type(exc).__name__}: {exc})") from exc
    for element in soup.find_all(_is_boilerplate):
        if not element.decomposed:  # an enclosing element may have gone already
            element.decompose()
    content = _content(soup)
    walker = _Walker()
    if content is not None:
        walker.walk(content)
    walker.flush()
    if not walker.pieces:
        raise BadDocument("no text in the page once navigation, banners and footers are dropped")
    return walker.pieces


def _is_boilerplate(tag) -> bool:
    if tag.name in _DROP_TAGS:
        return True
    if tag.name in _PAGE_PARTS and tag.find_parent(["main", "article", "section"]) is None:
        return True
    if tag.has_attr("hidden") or tag.get("aria-hidden") == "true" or tag.get("role") in _DROP_ROLES:
        return True
    if re.search(r"display\s*:\s*none|visibility\s*:\s*hidden", tag.get("style", ""), re.IGNORECASE):
        return True
    if tag.name in ("html", "body", "main"):
        return False
    names = [*tag.get("class", []), tag.get("id", "")]
    return any(_BOILERPLATE_PARTS.search(name) or _BOILERPLATE_WORDS.intersection(re.split(r"[-_\s]+", name.lower()))
               for name in names if name)


def _content(soup):
    main = soup.find("main") or soup.find(attrs={"role": "main"})
    if main is not None:
        return main
    articles = soup.find_all("article")
    if len(articles) == 1:
        return articles[0]
    return soup.body or soup


class _Walker:
    """Collects pieces in document order: inline text gathers into the current line; blocks end it."""

    def __init__(self) -> None:
        self.pieces: list[Piece] = []
        self.parts: list[str] = []
        self.label: str | None = None  # a list or point label waiting for the text it numbers

    def flush(self, level: int | None = None) -> None:
        text = " ".join(" ".join(self.parts).split())
        self.parts = []
        if text:
            if self.label:
                text, self.label = f"{self.label} {text}", None
            self.pieces.append(Piece(text, level=level))

    def walk(self, node) -> None:
        from bs4 import NavigableString, Tag
        from bs4.element import Comment, Doctype, ProcessingInstruction

        for child in node.children:
            if isinstance(child, (Comment, Doctype, ProcessingInstruction)):
                continue
            if isinstance(child, NavigableString):
                self.parts.append(str(child))
            elif isinstance(child, Tag):
                self._tag(child)

    def _tag(self, tag) -> None:
        level = _heading_level(tag)
        if level is not None:
            self.flush()
            self.parts.append(tag.get_text(" "))
            self.flush(level)
        elif tag.name == "br":
            self.flush()
        elif tag.name == "tr":
            self._row(tag)
        elif tag.name == "li":
            self.flush()
            self.label = _list_label(tag)
            self.walk(tag)
            self.flush()
            self.label = None  # an empty item numbers nothing
        elif tag.name in _BLOCKS:
            self.flush()
            self.walk(tag)
            self.flush()
        else:
            self.walk(tag)


    def _row(self, row) -> None:
        """A point laid out as a table row ("(a)" | its text, which may hold nested points) is the point's
        text after its label; any other row is one line of cells joined by " | "."""
        self.flush()
        cells = [cell for cell in row.find_all(["td", "th"], recursive=False) if cell.get_text(strip=True)]
        texts = [" ".join(cell.get_text(" ").split()) for cell in cells]
        if len(cells) == 2 and _POINT_LABEL.match(texts[0]):
            self.label = texts[0]
            self.walk(cells[1])
        elif texts:
            self.parts.append(" | ".join(texts))
        self.flush()
        self.label = None


def _heading_level(tag) -> int | None:
    if tag.name in _HEADINGS:
        return _HEADINGS[tag.name]
    if tag.get("role") == "heading":
        level = tag.get("aria-level", "2")
        return int(level) if level.isdigit() else 2
    return None


def _list_label(item) -> str | None:
    """The marker a browser shows before an item of an ordered list: "3." or "(c)"/"(iii)" for letters or roman."""
    parent = item.parent
    if parent is None or parent.name != "ol":
        return None
    start = parent.get("start", "1")
    number = (int(start) if start.lstrip("-").isdigit() else 1) + sum(
        1 for sibling in item.find_previous_siblings("li"))
    if item.get("value", "").isdigit():
        number = int(item["value"])
    kind = parent.get("type", "1")
    if kind in ("a", "A"):
        return f"({letters(number, kind == 'A')})"
    if kind in ("i", "I"):
        return f"({roman(number, kind == 'I')})"
    return f"{number}."
