"""Fixture repositories for the plan benchmark and its tests: two small Python packages with pytest tests.

The tests pass arguments explicitly where a request may change a default, so a right edit keeps
them green; a wrong one (a broken import, a bad default, a half rename) turns them red.
"""

from __future__ import annotations

from pathlib import Path

SHOP = {
    "shop/__init__.py": "",
    "shop/pricing.py": '''"""Prices and totals."""

TAX_RATE = 0.2


def compute_total(prices, discount=0.0):
    total = sum(prices)
    return total - total * discount


def apply_tax(amount, rate=TAX_RATE):
    return round(amount * (1 + rate), 2)


class Cart:
    def __init__(self):
        self.items = []

    def add(self, price):
        self.items.append(price)
        return self

    def total(self):
        return compute_total(self.items)
''',
    "shop/formatting.py": '''"""Showing amounts to people."""


def format_price(amount, currency="EUR"):
    return f"{amount:.2f} {currency}"
''',
    "shop/report.py": '''"""A one-line summary of a list of prices."""

from shop.formatting import format_price
from shop.pricing import apply_tax, compute_total


def summary(prices):
    return format_price(apply_tax(compute_total(prices, discount=0.0), rate=0.2), currency="EUR")
''',
    "tests/test_shop.py": '''from shop.formatting import format_price
from shop.pricing import Cart, apply_tax, compute_total
from shop.report import summary


def test_total():
    assert compute_total([1.0, 2.0], discount=0.0) == 3.0
    assert compute_total([10.0], discount=0.5) == 5.0


def test_tax():
    assert apply_tax(10.0, rate=0.2) == 12.0


def test_cart_keeps_prices():
    assert Cart().add(2.0).add(3.0).items == [2.0, 3.0]


def test_format():
    assert format_price(3.0, currency="EUR") == "3.00 EUR"


def test_summary():
    assert summary([10.0]) == "12.00 EUR"
''',
}

TEXTKIT = {
    "textkit/__init__.py": "",
    "textkit/words.py": '''"""Counting and shaping words."""


def count_words(text):
    return len(text.split())


def shout(text, suffix="!"):
    return text.upper() + suffix


def slugify(title, sep="-"):
    return sep.join(title.lower().split())
''',
    "textkit/cleaning.py": '''"""Cleaning text before it is counted."""


def strip_punctuation(text):
    return "".join(c for c in text if c.isalnum() or c.isspace())


def normalize(text):
    return " ".join(strip_punctuation(text).split()).lower()
''',
    "tests/test_textkit.py": '''from textkit.cleaning import normalize, strip_punctuation
from textkit.words import count_words, shout, slugify


def test_count():
    assert count_words("a b  c") == 3


def test_shout():
    assert shout("hi", suffix="!") == "HI!"


def test_slug():
    assert slugify("Hello World", sep="-") == "hello-world"


def test_strip():
    assert strip_punctuation("a, b.") == "a b"


def test_normalize():
    assert normalize("Hello,  World!") == "hello world"
''',
}

FIXTURES = {"shop": SHOP, "textkit": TEXTKIT}


def write_fixture(name: str, root: Path) -> Path:
    """Write fixture `name` under `root` (with an empty pytest.ini so pytest stops there); returns root."""
    for path, text in {**FIXTURES[name], "pytest.ini": "[pytest]\n"}.items():
        target = root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    return root
