"""Names a user may have mistyped: the upstream's closest ones, for "did you mean" hints."""

from __future__ import annotations

import difflib


def close_matches(wanted: str, known: list[str], n: int = 5) -> list[str]:
    """Return the known names closest to ``wanted`` (substring matches first)."""
    contains = [k for k in known if wanted.lower() in k.lower() or k.lower() in wanted.lower()]
    fuzzy = difflib.get_close_matches(wanted, known, n=n, cutoff=0.5)
    return list(dict.fromkeys(contains + fuzzy))[:n]
