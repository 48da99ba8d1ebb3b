"""What `daxiao compare` draws and writes for people: pareto.png, curves.png and a self-contained
report.html (tables and images inline, base64), which can be mailed to a colleague as one file."""

from __future__ import annotations

import base64
import html
import math
import platform
from datetime import datetime, timezone
from pathlib import Path

from ..files import atomic_write
from ..inference.profile import human, human_bytes
from ..plots import new_figure, text_fonts


def plot_pareto(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Test accuracy against batch-1 one-thread latency (log scale, IQR as error bars), bubble area
    proportional to parameters, every point labelled, and the Pareto frontier drawn as a step line."""
    fig = new_figure(8, 5.5)
    ax = fig.add_subplot()
    biggest = max(r["params"] for r in rows)
    for r, (dx, dy, align) in zip(rows, _label_places(rows), strict=True):
        colour = "tab:red" if r.get("pareto") else "tab:blue"
        ax.scatter(r["latency_ms"], 100 * r["test_acc"], s=60 + 1400 * r["params"] / biggest, alpha=0.45,
                   color=colour, edgecolors="black", linewidths=0.6, zorder=3)
        q1, q3 = r["profile"]["latency_1thread"]["q1_ms"], r["profile"]["latency_1thread"]["q3_ms"]
        ax.errorbar(r["latency_ms"], 100 * r["test_acc"], xerr=[[r["latency_ms"] - q1], [q3 - r["latency_ms"]]],
                    color="grey", lw=0.8, zorder=2)
        ax.annotate(f"{r['label']}\n{human(r['params'])} params", (r["latency_ms"], 100 * r["test_acc"]),
                    xytext=(dx, dy), textcoords="offset points", fontsize=8, ha=align)
    front = sorted((r for r in rows if r.get("pareto")), key=lambda r: r["latency_ms"])
    if front:  # a step line, carried on to the slowest model: nothing right of it and above it exists
        xs = [r["latency_ms"] for r in front] + [max(r["latency_ms"] for r in rows) * 1.5]
        ys = [100 * r["test_acc"] for r in front] + [100 * front[-1]["test_acc"]]
        ax.step(xs, ys, where="post", color="tab:red", lw=1.2, ls="--", label="Pareto frontier", zorder=1)
        ax.legend(loc="lower right", fontsize=8)
    ax.set_xscale("log")
    ax.set(xlabel="latency, batch 1, one thread (ms, log scale)", ylabel="test accuracy (%)",
           title=title or "accuracy against latency (bubble area ∝ parameters)")
    ax.grid(alpha=0.3, which="both")
    ax.margins(x=0.25, y=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def _label_places(rows: list[dict]) -> list[tuple[int, int, str]]:
    """(dx, dy, alignment) of each label: right of its point, or, when an earlier label is close (a quarter
    decade of latency and 3 accuracy points), on the left, then further down, so labels do not overprint."""
    places: list[tuple[int, int, str]] = []
    for i, r in enumerate(rows):
        near = sum(abs(q["test_acc"] - r["test_acc"]) < 0.03 and abs(math.log10(q["latency_ms"] / r["latency_ms"]))
                   < 0.25 for q in rows[:i])
        places.append((8, 6 - 24 * (near // 2), "left") if near % 2 == 0 else (-10, 6 - 24 * (near // 2), "right"))
    return places


def plot_curves(rows: list[dict], path: str | Path) -> Path:
    """Every model's validation accuracy and training loss against its training time (epochs differ under a
    time budget; time is the common axis), one line per model."""
    fig = new_figure(11, 4.2)
    acc, loss = fig.subplots(1, 2)
    for r in rows:
        h = r.get("history") or []
        if not h:
            continue
        seconds = [sum(x.get("epoch_seconds", 0) for x in h[:k + 1]) for k in range(len(h))]
        acc.plot(seconds, [100 * x["val_acc"] for x in h], marker="o", ms=3, label=r["label"])
        loss.plot(seconds, [x["train_loss"] for x in h], marker="o", ms=3, label=r["label"])
    acc.set(ylabel="validation accuracy (%)", title="validation accuracy")
    loss.set(ylabel="training loss", title="training loss", yscale="log")
    for ax in (acc, loss):
        ax.set_xlabel("training time (s), one point per epoch")
        ax.grid(alpha=0.3)
    acc.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return Path(path)


# ---- report.html ------------------------------------------------------------------------------------------
_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}th,td{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}tr.pareto{background:#fff4e5}
img{max-width:100%;border:1px solid #eee}code{background:#f6f6f6;padding:1px 4px}small{color:#666}"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{data}">'


def _table(rows: list[dict]) -> str:
    head = ["model", "Pareto", "test acc", "params", "MACs", "size fp32", "size int8 (est.)", "peak activations",
            "latency 1 thread", "latency all threads", "images/s (batch 64)", "train time", "epochs"]
    out = ["<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>"]
    for r in rows:
        cells = [html.escape(r["label"]), "★" if r.get("pareto") else "", f"{100 * r['test_acc']:.2f} %",
                 human(r["params"]), human(r["macs"]), human_bytes(r["size_fp32_bytes"]),
                 human_bytes(r["size_int8_bytes"]), human_bytes(r["peak_activation_bytes"]),
                 f"{r['latency_ms']:.2f} ± {r['latency_iqr_ms'] / 2:.2f} ms", f"{r['latency_all_threads_ms']:.2f} ms",
                 f"{r['throughput_images_per_s']:,.0f}", f"{r['train_seconds']:.1f} s", str(r["epochs"])]
        tds = "".join(f'<td class="num">{c}</td>' if i > 1 else f"<td>{c}</td>" for i, c in enumerate(cells))
        out.append(f'<tr class="{"pareto" if r.get("pareto") else ""}">{tds}</tr>')
    return "\n".join(out) + "</table>"


def write_report(path: str | Path, rows: list[dict], recipe: dict, images: dict[str, Path]) -> Path:
    """One HTML file with the recipe, the comparison table and the figures embedded."""
    best = max(rows, key=lambda r: r["test_acc"])
    fastest = min(rows, key=lambda r: r["latency_ms"])
    rec = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in recipe.items())
    body = f"""<!doctype html><html><head><meta charset="utf-8"><title>daxiao compare: {html.escape(recipe['data'])}
</title><style>{_CSS}</style></head><body>
<h1>Big and small models on {html.escape(recipe['data'])}</h1>
<p>Most accurate: <b>{html.escape(best['label'])}</b> ({100 * best['test_acc']:.2f} %). Fastest:
<b>{html.escape(fastest['label'])}</b> ({fastest['latency_ms']:.2f} ms per image on one thread).
★ marks the Pareto-optimal models: no other model is both at least as accurate and at least as fast.</p>
{_table(rows)}
<p><small>Accuracy on the {html.escape(rows[0]['test_split'])} split. Latency: one image, fp32, eval mode, median of
repeated runs after warm-up, ± half the interquartile range. int8 size: per-channel weight quantization estimate.
Peak activations: live tensor bytes during one image's forward pass.</small></p>
<h2>Accuracy against latency</h2>{_img(images['pareto'])}
<h2>Training curves</h2>{_img(images['curves'])}
<h2>Recipe</h2><table>{rec}</table>
<p><small>Written by daxiao compare on {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {html.escape(platform.node())},
{html.escape(platform.processor() or platform.machine())}.</small></p></body></html>"""
    atomic_write(path, body)
    return Path(path)


def write_figures_and_report(folder: Path, rows: list[dict], recipe: dict) -> dict[str, str]:
    title = f"{recipe['data']}, {recipe['budget']}: accuracy against latency (bubble area ∝ parameters)"
    with text_fonts([title, *(str(r["label"]) for r in rows)]):  # a data folder's or model's name in any script
        images = {"pareto": plot_pareto(rows, folder / "pareto.png", title),
                  "curves": plot_curves(rows, folder / "curves.png")}
    report = write_report(folder / "report.html", rows, recipe, images)
    return {"pareto": str(images["pareto"]), "curves": str(images["curves"]), "report": str(report)}
