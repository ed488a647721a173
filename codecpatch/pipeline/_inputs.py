"""Which videos a run processes: a folder, a glob, a text list or a Parquet list, each with a stable id."""

from __future__ import annotations

import glob as globbing
import os
from dataclasses import dataclass
from pathlib import Path

from ..decode._source import is_url

VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mts", ".mpg", ".mpeg", ".flv",
                            ".264", ".h264", ".265", ".h265", ".hevc", ".ivf", ".y4m"})


@dataclass(frozen=True)
class InputVideo:
    """One input: its path, its stable id (path relative to the input root, or a given id), optional text."""

    path: str
    video_id: str
    text: str | None = None


def list_inputs(spec: str | os.PathLike) -> list[InputVideo]:
    """Inputs from a folder (recursive, by video suffix), a glob, a ``.txt`` list (``path`` or
    ``path<TAB>text`` per line, relative to the list's folder) or a ``.parquet`` list (columns ``path`` and
    optionally ``id``, ``text``). Sorted by id, so the order does not depend on the file system."""
    spec = os.fspath(spec)
    path = Path(spec)
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES]
        inputs = [InputVideo(str(p), p.relative_to(path).as_posix()) for p in files]
    elif path.suffix == ".txt" and path.is_file():
        inputs = []
        for line in path.read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            name, _, text = line.partition("\t")
            resolved = name if is_url(name) or Path(name).is_absolute() else path.parent / name
            inputs.append(InputVideo(str(resolved), name, text or None))
    elif path.suffix == ".parquet" and path.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(path).to_pylist()
        if table and "path" not in table[0]:
            raise ValueError(f"{path}: a Parquet input list needs a 'path' column")
        inputs = [InputVideo(row["path"], str(row.get("id") or row["path"]), row.get("text")) for row in table]
    else:
        matches = sorted(globbing.glob(spec, recursive=True))
        if not matches:
            raise FileNotFoundError(f"{spec}: no such folder, list or matching files")
        root = Path(os.path.commonpath(matches)) if len(matches) > 1 else Path(matches[0]).parent
        inputs = [InputVideo(m, Path(m).relative_to(root).as_posix()) for m in matches if Path(m).is_file()]
    ids = [i.video_id for i in inputs]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{spec}: duplicate input ids")
    return sorted(inputs, key=lambda i: i.video_id)


def ignored_files(spec: str | os.PathLike) -> list[tuple[str, str]]:
    """(file, reason) for the files of an input folder that are not taken as inputs (no video suffix).
    Empty for a glob or a list, which name their inputs."""
    path = Path(spec)
    if not path.is_dir():
        return []
    return sorted((p.relative_to(path).as_posix(), f"not a video suffix ({p.suffix or 'none'})")
                  for p in path.rglob("*") if p.is_file() and p.suffix.lower() not in VIDEO_SUFFIXES)
