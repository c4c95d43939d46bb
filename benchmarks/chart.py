"""The chart of a run: each contender's throughput as a multiple of bare SQLAlchemy's, per workload and backend."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: write the file only

import matplotlib.pyplot as plt

COLOURS = {"raw": "#9e9e9e", "sqlalchemy": "#4c72b0", "seed": "#dd8452", "db": "#55a868"}


def draw(report: dict[str, Any], path: Path) -> None:
    """A PNG of ``report``'s ratios: one panel per backend, one group of bars per workload."""
    backends = report["backends"]
    fig, axes = plt.subplots(1, len(backends), figsize=(4.2 * len(backends), 3.8), sharey=True, squeeze=False)
    for ax, (backend, workloads) in zip(axes[0], backends.items(), strict=True):
        names = list(workloads)
        contenders = list(next(iter(workloads.values())))
        width = 0.8 / len(contenders)
        for i, contender in enumerate(contenders):
            # W6 and W7 have only some of the contenders: a gap where one did not run.
            ran = [n for n, w in enumerate(names) if contender in workloads[w]]
            ratios = [workloads[names[n]][contender]["ratio_to_sqlalchemy"] for n in ran]
            offsets = [n + (i - (len(contenders) - 1) / 2) * width for n in ran]
            ax.bar(offsets, ratios, width, label=contender, color=COLOURS.get(contender))
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xticks(range(len(names)), names)
        ax.set_title(backend)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("throughput × bare SQLAlchemy")
    axes[0][-1].legend(loc="upper right", fontsize="small")
    fig.suptitle(f"db benchmark ({report['mode']} run, SQLAlchemy {report['versions']['sqlalchemy']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
