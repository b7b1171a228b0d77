"""PNG plots for the demo and the bench (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import pathlib
from typing import Mapping, Sequence

# one colour per implementation, stable across plots
_COLOURS = {
    "plain bridge": "tab:red",
    "ptp-switch E2E TC": "tab:blue",
    "ptp-switch P2P TC": "tab:cyan",
    "ptp-switch BC": "tab:green",
    "linuxptp E2E_TC": "tab:purple",
    "linuxptp P2P_TC": "tab:pink",
    "linuxptp BC": "tab:olive",
}


def plot_offsets(
    series: Mapping[str, Sequence[tuple[float, float]]],
    path: pathlib.Path,
    *,
    title: str,
    floor_ns: float = 10.0,
) -> pathlib.Path:
    """|offset| over time, log scale, one line per label; ``series[label] = [(t_s, offset_ns), ...]``.

    Values below ``floor_ns`` are drawn at the floor (a log axis has no zero).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 5.2), dpi=110)
    try:
        drawn = 0
        for label, pts in series.items():
            if not pts:
                continue
            t = [p[0] for p in pts]
            y = [max(abs(p[1]), floor_ns) for p in pts]
            ax.plot(t, y, label=f"{label} (n={len(pts)})", lw=1.0, marker=".", ms=2.5,
                    color=_COLOURS.get(label.split(":")[0].strip()))
            drawn += 1
        ax.set_yscale("log")
        ax.set_xlabel("time since the slave's first offset [s]")
        ax.set_ylabel("|slave offset| = error [ns] (log)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        for y, txt in ((1e3, "1 µs"), (1e6, "1 ms")):
            ax.axhline(y, color="grey", lw=0.6, ls="--")
            ax.text(ax.get_xlim()[0], y, f" {txt}", va="bottom", fontsize=7, color="grey")
        if drawn:
            ax.legend(fontsize=8, loc="upper right")
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path
