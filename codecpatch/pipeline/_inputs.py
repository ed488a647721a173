"""Which videos a run processes: a folder, a glob, a text list or a Parquet list, each with a stable id.

Every entry a folder walk or a glob sees ends in exactly one place: an input (processed: rows or an error
row) or a skipped entry with its reason (a broken or looping symlink, a directory named like a video, a
suffix outside the extension filter, ...). Nothing is dropped without a word.
"""

from __future__ import annotations

import errno
import glob as globbing
import json
import os
import stat
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

from ..decode import is_url, redact

#: The extension filter of folder inputs (``--extensions`` / ``[inputs] extensions`` replace it).
VIDEO_SUFFIXES = frozenset({".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v", ".ts", ".mts", ".mpg", ".mpeg", ".flv",
                            ".264", ".h264", ".265", ".h265", ".hevc", ".ivf", ".y4m"})
SKIPPED = "_skipped.json"


@dataclass(frozen=True)
class InputVideo:
    """One input: its path, its stable id (path relative to the input root, or a given id), optional text.

    ``path`` is what is opened (it may hold credentials); ``video_id`` and ``public_path`` are what outputs
    record (credentials redacted)."""

    path: str
    video_id: str
    text: str | None = None

    @property
    def public_path(self) -> str:
        return redact(self.path)


@dataclass(frozen=True)
class SkippedEntry:
    """An entry the input walk saw and did not process. ``reason`` is a short stable phrase (the summary
    groups by it); ``detail`` says more about this entry."""

    path: str
    reason: str
    detail: str = ""


@dataclass
class InputScan:
    """Everything an input spec names: the inputs to process and the entries skipped, with reasons."""

    inputs: list[InputVideo] = field(default_factory=list)
    skipped: list[SkippedEntry] = field(default_factory=list)
    count: int | None = None  # how many inputs a streamed walk yielded (its ``inputs`` are not kept); None: len(inputs)

    @property
    def input_count(self) -> int:
        return len(self.inputs) if self.count is None else self.count

    @property
    def seen(self) -> int:
        return self.input_count + len(self.skipped)

    def summary(self) -> str:
        """E.g. ``68 inputs, 6 skipped: 2 broken symlink, 1 symlink loop, ...`` (one line)."""
        line = f"{self.input_count} input{'' if self.input_count == 1 else 's'}"
        if self.skipped:
            reasons = Counter(entry.reason for entry in self.skipped)
            line += f", {len(self.skipped)} skipped: " + ", ".join(f"{count} {reason}" for reason, count in reasons.most_common())
        return line

    def write_skipped(self, directory) -> str:
        """Record the skipped entries as ``_skipped.json`` in ``directory`` (rewritten on every run, so it
        describes the last walk; ``directory``: a folder, URI or Store). Returns its path."""
        from ..shards import Store

        store = Store.at(directory)
        store.make()
        records = [asdict(entry) for entry in self.skipped]
        store.write_bytes(SKIPPED, (json.dumps({"inputs": self.input_count, "skipped": records}, indent=2) + "\n").encode())
        return store.uri(SKIPPED)


def parse_extensions(text: str | list[str] | tuple[str, ...] | frozenset | None) -> frozenset[str]:
    """``".mp4,.mkv"`` / ``["mp4", ".MKV"]`` -> {".mp4", ".mkv"}; None -> the default VIDEO_SUFFIXES."""
    if text is None:
        return VIDEO_SUFFIXES
    items = text.split(",") if isinstance(text, str) else list(text)
    suffixes = frozenset("." + item.strip().lower().lstrip(".") for item in items if item.strip().lstrip("."))
    if not suffixes:
        raise ValueError(f"no extensions in {text!r} (e.g. '.mp4,.mkv')")
    return suffixes


def list_inputs(spec: str | os.PathLike, extensions: frozenset[str] | None = None) -> list[InputVideo]:
    """The inputs of ``spec`` (see ``scan_inputs``), without the skipped entries."""
    return scan_inputs(spec, extensions).inputs


def scan_inputs(spec: str | os.PathLike, extensions: frozenset[str] | None = None) -> InputScan:
    """Inputs from a folder (recursive; files whose suffix is in ``extensions``, default VIDEO_SUFFIXES), a
    glob, a ``.txt`` list (``path`` or ``path<TAB>text`` per line, relative to the list's folder) or a
    ``.parquet`` list (columns ``path`` and optionally ``id``, ``text``), plus every folder or glob entry
    that is not processed, with its reason. Inputs are sorted by id, so the order does not depend on the
    file system. Listed inputs (``.txt``/``.parquet``) are all processed: a missing one becomes an error row.
    URL inputs get redacted ids (no credentials in any output)."""
    spec = os.fspath(spec)
    suffixes = VIDEO_SUFFIXES if extensions is None else extensions
    path = Path(spec)
    scan = InputScan()
    if path.is_dir():
        _walk(path, path, suffixes, scan)
    elif path.suffix == ".txt" and path.is_file():
        for line in path.read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            name, _, text = line.partition("\t")
            resolved = name if is_url(name) or Path(name).is_absolute() else path.parent / name
            scan.inputs.append(InputVideo(str(resolved), redact(name), text or None))
    elif path.suffix == ".parquet" and path.is_file():
        import pyarrow.parquet as pq

        table = pq.read_table(path).to_pylist()
        if table and "path" not in table[0]:
            raise ValueError(f"{path}: a Parquet input list needs a 'path' column")
        scan.inputs = [InputVideo(row["path"], redact(str(row.get("id") or row["path"])), row.get("text")) for row in table]
    else:
        matches = sorted(globbing.glob(spec, recursive=True))
        if not matches:
            raise FileNotFoundError(f"{spec}: no such folder, list or matching files")
        root = Path(os.path.commonpath(matches)) if len(matches) > 1 else Path(matches[0]).parent
        for match in matches:
            _classify(Path(match), root, suffixes, scan, named=True)
    ids = [i.video_id for i in scan.inputs]
    if len(set(ids)) != len(ids):
        duplicates = sorted(i for i, n in Counter(ids).items() if n > 1)
        raise ValueError(f"{redact(spec)}: duplicate input ids: {', '.join(duplicates[:5])}")
    scan.inputs.sort(key=lambda i: i.video_id)
    scan.skipped.sort(key=lambda s: s.path)
    return scan


def iter_inputs(spec: str | os.PathLike, extensions: frozenset[str] | None = None, *, batch_rows: int = 65536,
                endpoint: str | None = None, skipped: list[SkippedEntry] | None = None) -> Iterator[InputVideo]:
    """Stream the inputs of a list or an object-store prefix, never holding the whole list in memory.

    * ``LIST.txt`` (local or a URI such as ``s3://bucket/LIST.txt``): ``path`` or ``path<TAB>text`` per line,
      relative paths against the list's folder; read line by line.
    * ``LIST.parquet`` (local or a URI): columns ``path`` and optionally ``id``, ``text``; read ``batch_rows``
      rows at a time.
    * an object-store prefix (``s3://bucket/videos/``, ``gs://...``): the objects under it whose suffix is in
      ``extensions``, ids relative to the prefix (the listing holds names only; nothing is stat'ed or opened).
    * a local folder: walked as it is read, in the order ``scan_inputs`` sorts (by id), one folder's entry
      names at a time; regular files are not stat'ed (the directory entry's type is enough), only symlinks.
    * anything else (a glob): as ``scan_inputs``.

    Entries a folder walk or glob does not process go to ``skipped`` (when given) with their reasons, as
    ``scan_inputs`` reports them. Lists keep their own order (it defines the work units); ids are not checked
    for duplicates here (``codecpatch shards verify`` reports an input done twice). ``endpoint``: an S3
    endpoint override."""
    from ..shards import is_object_store

    text = os.fspath(spec)
    suffixes = VIDEO_SUFFIXES if extensions is None else extensions
    remote = is_object_store(text)
    lower = text.lower()
    if lower.endswith(".txt") and (remote or Path(text).is_file()):
        base = text.rsplit("/", 1)[0] if remote else str(Path(text).parent)
        for line in _lines(text, remote, endpoint):
            if not line.strip() or line.startswith("#"):
                continue
            name, _, caption = line.partition("\t")
            absolute = is_url(name) or "://" in name or Path(name).is_absolute()
            yield InputVideo(name if absolute else f"{base}/{name}", redact(name), caption or None)
    elif lower.endswith(".parquet") and (remote or Path(text).is_file()):
        import pyarrow.parquet as pq

        parquet = pq.ParquetFile(_open_remote(text, endpoint) if remote else text)
        names = parquet.schema_arrow.names
        if "path" not in names:
            raise ValueError(f"{redact(text)}: a Parquet input list needs a 'path' column")
        columns = [c for c in ("path", "id", "text") if c in names]
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            for row in batch.to_pylist():
                yield InputVideo(row["path"], redact(str(row.get("id") or row["path"])), row.get("text"))
    elif remote:
        from pyarrow import fs as pafs

        from ..shards import remote_filesystem

        filesystem, root = remote_filesystem(text, endpoint)
        scheme = text.split("://", 1)[0]
        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        for info in filesystem.get_file_info(selector):
            if info.type == pafs.FileType.File and Path(info.path).suffix.lower() in suffixes:
                yield InputVideo(f"{scheme}://{info.path}", info.path[len(root):].lstrip("/"))
    elif Path(text).is_dir():
        scan = InputScan()  # its inputs stay empty: they are yielded as the walk finds them
        yield from _walk_stream(Path(text), Path(text), suffixes, scan)
        if skipped is not None:
            skipped.extend(scan.skipped)
    else:
        scan = scan_inputs(spec, extensions)
        if skipped is not None:
            skipped.extend(scan.skipped)
        yield from scan.inputs


def _walk_stream(directory: Path, root: Path, suffixes: frozenset[str], scan: InputScan) -> Iterator[InputVideo]:
    """The inputs under ``directory`` as the walk finds them, in id order (siblings sorted by name, a real
    folder's as ``name/``: the concatenated ids then sort exactly as ``scan_inputs`` sorts them); skipped
    entries go to ``scan.skipped``. A plain file or folder is told apart by its directory entry (no stat);
    symlinks and other entries are classified by ``_classify``."""
    try:
        with os.scandir(directory) as listing:
            entries = [(entry.name + "/" if entry.is_dir(follow_symlinks=False) else entry.name, entry) for entry in listing]
    except OSError as error:
        scan.skipped.append(SkippedEntry(str(directory), "unreadable folder", error.strerror or str(error)))
        return
    entries.sort(key=lambda pair: pair[0])
    for key, entry in entries:
        entry_path = Path(entry.path)
        if key.endswith("/"):
            if entry_path.suffix.lower() in suffixes:
                scan.skipped.append(SkippedEntry(str(entry_path), "directory with a video suffix",
                                                 "a folder, not a video file (its contents are walked)"))
            yield from _walk_stream(entry_path, root, suffixes, scan)
        elif entry.is_file(follow_symlinks=False):
            if entry_path.suffix.lower() in suffixes:
                yield InputVideo(str(entry_path), entry_path.relative_to(root).as_posix())
            else:
                scan.skipped.append(SkippedEntry(str(entry_path), "extension not selected",
                                                 f"{entry_path.suffix.lower() or 'no suffix'} is not in the input extensions (--extensions)"))
        else:  # a symlink, device, pipe or socket
            found = InputScan()
            _classify(entry_path, root, suffixes, found, named=False)
            scan.skipped.extend(found.skipped)
            yield from found.inputs


def _open_remote(uri: str, endpoint: str | None):
    from ..shards import remote_filesystem

    filesystem, path = remote_filesystem(uri, endpoint)
    return filesystem.open_input_file(path)


def _lines(text: str, remote: bool, endpoint: str | None) -> Iterator[str]:
    """The lines of a local or remote text file, read in blocks (without their line ends)."""
    import io

    raw = _open_remote(text, endpoint) if remote else open(text, "rb")
    with io.TextIOWrapper(raw if not remote else io.BufferedReader(raw), encoding="utf-8") as handle:
        for line in handle:
            yield line.rstrip("\r\n")


def _walk(directory: Path, root: Path, suffixes: frozenset[str], scan: InputScan) -> None:
    """Classify every entry under ``directory`` (real subfolders are walked; symlinked folders are not)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except OSError as error:
        scan.skipped.append(SkippedEntry(str(directory), "unreadable folder", error.strerror or str(error)))
        return
    for entry in entries:
        entry_path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            if entry_path.suffix.lower() in suffixes:
                scan.skipped.append(SkippedEntry(str(entry_path), "directory with a video suffix",
                                                 "a folder, not a video file (its contents are walked)"))
            _walk(entry_path, root, suffixes, scan)
        else:
            _classify(entry_path, root, suffixes, scan, named=False)


def _classify(path: Path, root: Path, suffixes: frozenset[str], scan: InputScan, named: bool) -> None:
    """Put one entry in ``scan.inputs`` or ``scan.skipped``. ``named``: a glob matched it, so the user chose
    it by name and the extension filter does not apply (a folder it matched is reported, not walked)."""
    try:
        info = os.stat(path)  # follows symlinks
    except OSError as error:
        if path.is_symlink():
            if error.errno == errno.ELOOP:
                scan.skipped.append(SkippedEntry(str(path), "symlink loop", f"-> {os.readlink(path)}"))
            else:
                scan.skipped.append(SkippedEntry(str(path), "broken symlink", f"-> {os.readlink(path)} (target missing)"))
        else:
            scan.skipped.append(SkippedEntry(str(path), "unreadable entry", error.strerror or str(error)))
        return
    if stat.S_ISDIR(info.st_mode):
        if path.is_symlink():
            scan.skipped.append(SkippedEntry(str(path), "symlink to a folder", f"-> {os.readlink(path)} (not followed)"))
        elif path.suffix.lower() in suffixes:
            scan.skipped.append(SkippedEntry(str(path), "directory with a video suffix", "a folder, not a video file"))
        else:
            scan.skipped.append(SkippedEntry(str(path), "folder matched by the pattern", "globs select files"))
        return
    if not stat.S_ISREG(info.st_mode):
        scan.skipped.append(SkippedEntry(str(path), "not a regular file", "a device, pipe or socket"))
        return
    if not named and path.suffix.lower() not in suffixes:
        scan.skipped.append(SkippedEntry(str(path), "extension not selected",
                                         f"{path.suffix.lower() or 'no suffix'} is not in the input extensions (--extensions)"))
        return
    scan.inputs.append(InputVideo(str(path), path.relative_to(root).as_posix()))
