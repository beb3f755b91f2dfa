"""The charts of ``run_report.html``, drawn with matplotlib as inline SVG (text kept as text, stable ids).

Pure functions of the data :func:`jobs.report.run_report.collect_report` gathers; no I/O.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from .run_files import DPI, INK

__all__ = ["chart_steps", "chart_slowest", "chart_histogram", "chart_concentration", "PLACE_STATES", "CLUMP_CHART",
           "BAR", "RED"]

PLACE_STATES = ("s4", "s5", "s6")
CLUMP_CHART = 20  # countries (most sites first) in the concentration chart
STATE_COLOURS = {"s4": "#4c78a8", "s5": "#f58518", "s6": "#54a24b"}
BAR, RED = "#4c78a8", "#e45756"


def _svg(fig) -> str:
    """A matplotlib figure as inline SVG text: text kept as text, stable ids, no date, no metadata block."""
    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.hashsalt": "segment1b", "svg.fonttype": "none"}):
        fig.savefig(buf, format="svg", metadata={"Date": None})
    text = buf.getvalue()
    text = text[text.index("<svg"):]
    start, end = text.find("<metadata>"), text.find("</metadata>")
    return text[:start] + text[end + len("</metadata>"):] if 0 <= start < end else text


def _figure(width_px: int, height_px: int, margins: tuple[int, int, int, int]):
    """A figure of that many pixels and its axes inside (left, bottom, right, top) pixel margins."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    left, bottom, right, top = margins
    ax = fig.add_axes((left / width_px, bottom / height_px, 1 - (left + right) / width_px,
                       1 - (bottom + top) / height_px))
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.tick_params(labelsize=9, colors="#444444")
    return fig, ax


def chart_steps(steps: list[dict[str, Any]]) -> str:
    fig, ax = _figure(720, 70 + 24 * len(steps), (144, 50, 56, 14))
    names = [r["step"] for r in steps][::-1]
    v = [float(r["seconds"]) for r in steps][::-1]
    bars = ax.barh(names, v, color=BAR, height=0.7)
    ax.bar_label(bars, labels=[f"{x:.2f} s" for x in v], fontsize=8, padding=3)
    ax.set_xlabel("wall seconds of each step of `segment1b run`", fontsize=9)
    return _svg(fig)


def chart_slowest(slowest: list[dict[str, Any]]) -> str:
    fig, ax = _figure(720, 70 + 22 * len(slowest), (58, 50, 28, 14))
    names = [r["country_iso"] for r in slowest][::-1]
    left = np.zeros(len(names))
    for s in PLACE_STATES:
        v = np.array([r["seconds"].get(s, 0.0) for r in slowest][::-1])
        ax.barh(names, v, left=left, color=STATE_COLOURS[s], label=s.upper(), height=0.7)
        left += v
    ax.set_xlabel("task seconds summed over the country's work units", fontsize=9)
    ax.legend(fontsize=9, frameon=False, loc="lower right")
    return _svg(fig)


def chart_histogram(histogram: list[tuple[int, int]]) -> str:
    fig, ax = _figure(720, 280, (72, 48, 28, 20))
    a, v = [k for k, _ in histogram], [n for _, n in histogram]
    bars = ax.bar(a, v, color=BAR, width=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("attempts until accepted (S6, 64 at most)", fontsize=9)
    ax.set_ylabel("sites", fontsize=9)
    if len(a) <= 16:  # few bars: every attempt count labelled, with its number of sites
        ax.set_xticks(a)
        ax.bar_label(bars, labels=[f"{n:,}" for n in v], fontsize=7, padding=2)
    else:  # the table below the chart has every number
        from matplotlib.ticker import MaxNLocator

        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _svg(fig)


def chart_concentration(conc) -> str:
    """Top-tile share (bars) against the top tile's weight (ticks), for the countries with most sites."""
    top = conc.sort_values(["sites", "country_iso"], ascending=[False, True]).head(CLUMP_CHART).iloc[::-1]
    fig, ax = _figure(720, 96 + 20 * len(top), (58, 50, 28, 40))
    y = np.arange(len(top))
    ax.barh(y, top["top_tile_share"], color=RED, height=0.7, label="share of the sites in the top tile")
    if "top_tile_weight" in top and top["top_tile_weight"].notna().any():
        ax.scatter(top["top_tile_weight"], y, marker="|", s=160, color=INK, linewidths=2,
                   label="the top tile's weight (its expected share)", zorder=3)
    ax.set_yticks(y, top["country_iso"])
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of the country's sites; the {len(top)} countries with most sites", fontsize=9)
    ax.legend(fontsize=9, frameon=False, loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2)
    return _svg(fig)
