"""``--plot PATH``: the graph's first- and repeat-click latency against client concurrency, as a PNG."""

from __future__ import annotations

from typing import Any


def plot(report: dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted(report["concurrency"], key=int)
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind in ("first_click_ms", "repeat_click_ms"):
        for q, style in (("p50", "-o"), ("p90", "--")):
            ax.plot([int(c) for c in levels], [report["concurrency"][c][kind][q] for c in levels], style,
                    label=f"{kind.replace('_ms', '')} {q}")
    ax.set_xlabel("concurrent clients")
    ax.set_ylabel("latency (ms)")
    ax.set_yscale("log")
    ax.set_title(f"{report['model']} on {report['device']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
