"""Slider latency of the explorers: from a slider move to new PNG bytes in the Image widget.

Compared in the same run with the common alternative, a matplotlib figure redrawn per move
(what ``ipywidgets.interact`` + ``plt.imshow`` does). Target: median <= 100 ms.
"""

from __future__ import annotations

import statistics
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from _report import table, write_section  # noqa: E402

import helpers  # noqa: E402
from helpers.plotting import figure_to_png  # noqa: E402
from helpers.widgets import FeatureMapExplorer, FilterExplorer  # noqa: E402


def latencies(move, n: int = 60) -> tuple[float, float]:
    times = []
    for i in range(n):
        start = time.perf_counter()
        move(i)
        times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return statistics.median(times), times[int(0.9 * len(times))]


def main() -> None:
    model = helpers.load_model()
    rows = []
    explorer = FeatureMapExplorer(model, ["cat", "coffee"])
    for layer in ("bn1", "bn2"):
        explorer.layer_slider.value = layer
        channels = explorer.channel_slider.max + 1
        median, p90 = latencies(lambda i, n=channels: setattr(explorer.channel_slider, "value",
                                                              (i * 7 + 1) % n))
        rows.append({"what": f"feature-map explorer, channel slider ({layer})",
                     "median ms": f"{median:.1f}", "p90 ms": f"{p90:.1f}"})

        def matplotlib_redraw(i, layer=layer, channels=channels):
            fig, ax = plt.subplots(figsize=(4, 4))
            shown = ax.imshow(explorer.activations("cat")[layer][(i * 7 + 1) % channels])
            fig.colorbar(shown, ax=ax)
            ax.set_title(f"{layer}")
            figure_to_png(fig)

        median, p90 = latencies(matplotlib_redraw, n=20)
        rows.append({"what": f"  same picture redrawn with matplotlib ({layer})",
                     "median ms": f"{median:.1f}", "p90 ms": f"{p90:.1f}"})
    start = time.perf_counter()
    explorer.image_menu.value = "coffee"
    rows.append({"what": "feature-map explorer, new image (one forward, all stages cached)",
                 "median ms": f"{(time.perf_counter() - start) * 1000:.1f}", "p90 ms": "-"})
    filters = FilterExplorer(model)
    median, p90 = latencies(lambda i: setattr(filters.channel_slider, "value", i % 32))
    rows.append({"what": "filter explorer, filter slider (first layer)",
                 "median ms": f"{median:.1f}", "p90 ms": f"{p90:.1f}"})
    write_section("widgets.py", "Explorer slider latency (slider move -> new PNG in the widget)",
                  "Target: median <= 100 ms. Lite0, 224x224 input.\n\n" + table(rows))


if __name__ == "__main__":
    main()
