"""matplotlib for the benchmarks' PNGs: imported only when a plot is drawn, on the Agg backend (no display)."""

from __future__ import annotations


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
