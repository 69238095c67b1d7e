"""Per-layer timeline of a split prefill: compute spans and KV send spans, layerwise and bulk.

`layer_timeline` is pure data; `draw_timeline` renders it with matplotlib (imported lazily, so the
operator image needs no plotting library).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hybrid_operator.planner.placements import Placement


@dataclass(frozen=True)
class Span:
    """One bar on the timeline, in seconds from the start of the prefill."""

    layer: int  # decoder layer index
    start: float
    end: float


@dataclass(frozen=True)
class Timeline:
    """Compute spans on the prefill device and send spans on the link for one transfer mode."""

    mode: str  # bulk | layerwise
    compute: list[Span]  # one per layer, back to back
    send: list[Span]  # one per layer, in layer order
    first_token_at: float  # when the decode device holds the whole cache (TTFT minus latency)


def layer_timeline(placement: Placement, layers: int, mode: str) -> Timeline:
    """Spans for `placement`'s prefill with KV sent in `mode` (uniform layers, one link)."""
    t_c, t_s = placement.prefill_layer_seconds, placement.kv_layer_send_seconds
    compute = [Span(i, i * t_c, (i + 1) * t_c) for i in range(layers)]
    send: list[Span] = []
    link_free = placement.prefill_seconds if mode == "bulk" else 0.0
    for span in compute:
        start = max(link_free, span.end)
        send.append(Span(span.layer, start, start + t_s))
        link_free = start + t_s
    return Timeline(mode, compute, send, max(placement.prefill_seconds, link_free))


def draw_timeline(placement: Placement, layers: int, path: Path, title: str) -> None:
    """Write a PNG of the prefill timeline in both modes, followed by the decode phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(10, 3.6))
    rows = [("layerwise", 2.0), ("bulk", 0.0)]
    for mode, base in rows:
        timeline = layer_timeline(placement, layers, mode)
        compute = [(s.start, s.end - s.start) for s in timeline.compute]
        send = [(s.start, s.end - s.start) for s in timeline.send]
        axes.broken_barh(compute, (base + 1.0, 0.8), facecolors="tab:blue", edgecolors="white")
        axes.broken_barh(send, (base + 0.1, 0.8), facecolors="tab:orange", edgecolors="white")
        axes.broken_barh(
            [(timeline.first_token_at, placement.decode_seconds)], (base + 0.1, 1.7), facecolors="tab:green"
        )
        axes.text(
            timeline.first_token_at, base + 1.9, f" first token {timeline.first_token_at:.2f} s", fontsize=8
        )
    axes.set_yticks(
        [0.5, 1.4, 2.5, 3.4],
        ["bulk: KV send", f"bulk: prefill ({placement.prefill})", "layerwise: KV send", "layerwise: prefill"],
    )
    axes.set_xlabel("seconds from request start (blue: prefill layers, orange: KV per layer, green: decode)")
    axes.set_title(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
