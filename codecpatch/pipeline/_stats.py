"""What a run did, for batch runs (``_stats.json``) and live streams (``_stream_stats.json``) alike: one
base type with the counts both keep, and one atomic JSON writer (a reader never sees half a file)."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


def write_json_atomic(path: str | os.PathLike, data) -> None:
    """Write ``data`` as indented JSON to ``path`` (a local path or a URI) with the shards' one atomic writer
    (``Store.write_bytes``: temporary file + rename locally, one put on an object store)."""
    from ..shards import Store

    parent, _, name = str(path).rpartition("/")
    Store.at(parent or ".").write_bytes(name, (json.dumps(data, indent=2) + "\n").encode())


@dataclass
class Stats:
    """Counts every run keeps.

    Attributes:
        frames: frames decoded; n_tokens: tokens written.
        seconds: wall-clock seconds of the run.
        stage_seconds: stage name ("decode", "patchify", "encode", "compress") -> seconds, summed.
    """

    frames: int = 0
    n_tokens: int = 0
    seconds: float = 0.0
    stage_seconds: dict = field(default_factory=lambda: defaultdict(float))

    def add_stage_seconds(self, seconds: dict) -> None:
        for stage, value in seconds.items():
            self.stage_seconds[stage] += value

    def to_dict(self) -> dict:
        """The stats as JSON values (stage seconds rounded to 4 decimals)."""
        data = dict(self.__dict__)
        data["stage_seconds"] = {k: round(v, 4) for k, v in self.stage_seconds.items()}
        return data

    def save(self, path: str | os.PathLike) -> None:
        """Write ``to_dict()`` to ``path`` atomically."""
        write_json_atomic(path, self.to_dict())
