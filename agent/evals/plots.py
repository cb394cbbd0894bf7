"""Accuracy against context length, one line per method and one panel per variant."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

STYLE = {"l2m": ("tab:red", "o"), "truncate": ("tab:blue", "s"), "full": ("tab:green", "^"), "rag": ("tab:orange", "D")}


def format_length(tokens: int) -> str:
    """4096 -> 4K, 0 -> 0K, 1536 -> 1.5K, 1048576 -> 1M; other lengths stay plain numbers (700, 512)."""
    if tokens and tokens % (1024 * 1024) == 0:
        return f"{tokens // (1024 * 1024)}M"
    if tokens % 1024 == 0 or (tokens > 1024 and tokens % 512 == 0):
        return f"{tokens / 1024:g}K"
    return str(tokens)


def plot_accuracy(results: dict, path: Path) -> Path:
    """Write the plot of `results` (a runner's JSON) to `path`; points only where a method was scored."""
    summary = results["summary"]
    variants = list(dict.fromkeys(r["variant"] for r in summary))
    methods = list(dict.fromkeys(r["method"] for r in summary))
    lengths = sorted({r["length"] for r in summary})
    fig, axes = plt.subplots(1, max(len(variants), 1), figsize=(3.6 * max(len(variants), 1) + 0.8, 3.4),
                             squeeze=False, sharey=True)
    for ax, variant in zip(axes[0], variants, strict=False):
        for i, method in enumerate(methods):
            rows = sorted((r for r in summary if r["variant"] == variant and r["method"] == method
                           and r["accuracy"] is not None), key=lambda r: r["length"])
            color, marker = STYLE.get(method, (None, "o"))
            shift = 0.06 * (i - (len(methods) - 1) / 2)  # equal curves stay visible side by side
            ax.plot([lengths.index(r["length"]) + shift for r in rows], [100 * r["accuracy"] for r in rows],
                    marker=marker, color=color, label=method, alpha=0.85)
        ax.set_title(f"{results['task']} {variant}" if variant != results["task"] else variant)
        ax.set_xticks(range(len(lengths)), [format_length(n) for n in lengths])
        ax.set_xlabel("context length (tokens)")
        ax.set_ylim(-5, 105)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    if axes[0][-1].get_legend_handles_labels()[0]:
        axes[0][-1].legend(loc="best", fontsize="small")
    fig.suptitle(f"{results['model']['name']}", fontsize="small")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
