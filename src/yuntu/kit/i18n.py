"""Pick the message language from Accept-Language: zh-CN by default, English when preferred."""

from __future__ import annotations

from typing import Literal

Lang = Literal["zh", "en"]


def preferred_language(header: str | None) -> Lang:
    if not header:
        return "zh"
    best: tuple[float, Lang] = (-1.0, "zh")
    for index, part in enumerate(header.split(",")[:20]):
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                quality = float(params[2:])
            except ValueError:
                quality = 0.0
        tag = tag.strip().lower()
        lang: Lang | None = "en" if tag.startswith("en") else "zh" if tag.startswith("zh") else None
        # Earlier entries win ties, as the header lists preferences in order.
        score = quality - index * 1e-6
        if lang and quality > 0 and score > best[0]:
            best = (score, lang)
    return best[1]
