"""Small parsers shared by the settings: comma lists that keep bracketed parts whole."""

from __future__ import annotations


def split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets: "a,b[alpha=0.5,drop_rate=0.1],zoom_range=(0.8,1.2)" keeps each
    bracketed part whole. Empty items are dropped; items are stripped."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch in "[(") - (ch in "])")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return [p.strip() for p in [*parts, cur] if p.strip()]
