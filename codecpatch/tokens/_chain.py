"""Compressor chains from a spec string: ``"apet:0.25"``, ``"duet:0.5,apet:0.5"``, ``"apet:0.25@clip"``."""

from __future__ import annotations

from typing import Callable

from ._apet import apet
from ._duet import duet_v2v
from ._types import TokenSet

COMPRESSORS: dict[str, Callable[..., TokenSet]] = {"apet": apet, "duet": duet_v2v, "duet_v2v": duet_v2v}


def parse_chain(spec: str) -> list[tuple[str, float, str]]:
    """"apet:0.25,duet:0.5@clip" -> [("apet", 0.25, "frame"), ("duet", 0.5, "clip")]. Empty -> []."""
    stages = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, rest = part.partition(":")
        ratio_text, _, scope = rest.partition("@")
        if name not in COMPRESSORS:
            raise ValueError(f"unknown compressor {name!r} in {spec!r}; known: {sorted(COMPRESSORS)}")
        try:
            ratio = float(ratio_text) if ratio_text else 0.5
        except ValueError:
            raise ValueError(f"compressor {name!r}: keep ratio {ratio_text!r} is not a number") from None
        if scope not in ("", "frame", "clip"):
            raise ValueError(f"compressor {name!r}: scope must be @frame or @clip, got @{scope}")
        stages.append((name, ratio, scope or "frame"))
    return stages


def compress(tokens: TokenSet, spec: "str | list[tuple[str, float, str]]") -> TokenSet:
    """Apply the compressors of ``spec`` in order: a chain spec, or one already parsed by ``parse_chain``."""
    for name, ratio, scope in (parse_chain(spec) if isinstance(spec, str) else spec):
        tokens = COMPRESSORS[name](tokens, ratio, scope=scope)
    return tokens
