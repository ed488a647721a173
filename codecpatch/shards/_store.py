"""Where shards live: a local folder (``os`` calls: temporary name + rename) or any location pyarrow's
filesystems reach (``s3://``, ``gs://``, ``hdfs://``; credentials from the environment as pyarrow takes
them). ``CODECPATCH_S3_ENDPOINT`` (or ``endpoint=``) points ``s3://`` at an S3-compatible store, e.g.
``http://127.0.0.1:9000``."""

from __future__ import annotations

import os
from pathlib import Path

_TEMP_SUFFIX = ".tmp"
S3_ENDPOINT_ENV = "CODECPATCH_S3_ENDPOINT"


#: URI schemes read through pyarrow's filesystems (object stores and HDFS), as opposed to streamed URLs.
OBJECT_STORE_SCHEMES = ("s3", "gs", "gcs", "hdfs", "viewfs", "abfs", "abfss")


def is_object_store(uri) -> bool:
    """``s3://``, ``gs://``, ``hdfs://``...: a location pyarrow's filesystems read (not an http/rtsp URL)."""
    return str(uri).split("://", 1)[0].lower() in OBJECT_STORE_SCHEMES if "://" in str(uri) else False


def is_remote(location) -> bool:
    return "://" in str(location) and not str(location).startswith("file://")


def remote_filesystem(uri: str, endpoint: str | None = None):
    """(pyarrow FileSystem, path inside it) for a URI; ``s3://`` honours an endpoint override."""
    from pyarrow import fs as pafs

    endpoint = endpoint or os.environ.get(S3_ENDPOINT_ENV)
    if uri.startswith("s3://") and endpoint:
        scheme, _, host = endpoint.partition("://")
        if not host:
            scheme, host = "https", endpoint
        filesystem = pafs.S3FileSystem(endpoint_override=host, scheme=scheme,
                                       region=os.environ.get("AWS_DEFAULT_REGION", os.environ.get("AWS_REGION", "us-east-1")))
        return filesystem, uri.removeprefix("s3://").rstrip("/")
    filesystem, path = pafs.FileSystem.from_uri(uri)
    return filesystem, path.rstrip("/")


class _LocalSink:
    """A file written under ``NAME.tmp`` and renamed to ``NAME`` by ``publish``."""

    filesystem = None

    def __init__(self, final: Path) -> None:
        self.final = final
        self.target = str(final.with_name(final.name + _TEMP_SUFFIX))

    def size(self) -> int:
        try:
            return os.stat(self.target).st_size
        except OSError:
            return 0

    def publish(self) -> int:
        os.replace(self.target, self.final)
        return self.final.stat().st_size

    def discard(self) -> None:
        Path(self.target).unlink(missing_ok=True)


class _RemoteSink:
    """An object written in one upload: it exists only once the upload completes (``publish``)."""

    filesystem = None

    def __init__(self, filesystem, path: str) -> None:
        self.path = path
        self._fs = filesystem
        self.target = filesystem.open_output_stream(path)

    def size(self) -> int:
        return self.target.tell()

    def publish(self) -> int:
        size = self.target.tell()
        if not self.target.closed:
            self.target.close()
        return size

    def discard(self) -> None:
        abort = getattr(self.target, "abort", None)
        if abort is not None and not self.target.closed:
            abort()
        else:
            self.target.close()
            self._fs.delete_file(self.path)


class Store:
    """One output location: small atomic writes, reads, listings and shard sinks by relative name."""

    def __init__(self, location, endpoint: str | None = None) -> None:
        self.location = str(location)
        self.endpoint = endpoint
        self.remote = is_remote(location)
        if self.remote:
            self.fs, self.root = remote_filesystem(self.location, endpoint)
        else:
            self.fs, self.root = None, Path(str(location).removeprefix("file://"))

    @classmethod
    def at(cls, location, endpoint: str | None = None) -> "Store":
        return location if isinstance(location, Store) else cls(location, endpoint)

    def __reduce__(self):  # sent to Ray workers by location: filesystems are rebuilt there
        return (Store, (self.location, self.endpoint or os.environ.get(S3_ENDPOINT_ENV)))

    def path(self, name: str) -> str:
        """Full path of ``name`` (inside the filesystem for remote locations)."""
        return f"{self.root}/{name}" if self.remote else str(self.root / name)

    def uri(self, name: str) -> str:
        return f"{self.location.rstrip('/')}/{name}" if self.remote else str(self.root / name)

    def make(self) -> None:
        if self.remote:
            self.fs.create_dir(self.root, recursive=True)
        else:
            self.root.mkdir(parents=True, exist_ok=True)

    def exists(self, name: str = "") -> bool:
        if not self.remote:
            return (self.root / name).exists()
        from pyarrow import fs as pafs

        return self.fs.get_file_info(self.path(name) if name else self.root).type != pafs.FileType.NotFound

    def read_bytes(self, name: str) -> bytes | None:
        try:
            if not self.remote:
                return (self.root / name).read_bytes()
            with self.fs.open_input_stream(self.path(name)) as stream:
                return stream.read()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            return None
        except OSError as error:
            if self.remote and "not found" in str(error).lower() or "does not exist" in str(error).lower():
                return None
            raise

    def write_bytes(self, name: str, data: bytes) -> None:
        """Replace ``name`` atomically (local: temporary file + rename; remote: one put)."""
        if not self.remote:
            path = self.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(path.name + _TEMP_SUFFIX)
            temporary.write_bytes(data)
            os.replace(temporary, path)
            return
        with self.fs.open_output_stream(self.path(name)) as stream:
            stream.write(data)

    def list_names(self, folder: str = "") -> list[str]:
        """Names (not paths) of the files directly in ``folder``; [] when it does not exist."""
        if not self.remote:
            try:
                with os.scandir(self.root / folder) as entries:
                    return [e.name for e in entries if e.is_file()]
            except (FileNotFoundError, NotADirectoryError):
                return []
        from pyarrow import fs as pafs

        selector = pafs.FileSelector(self.path(folder) if folder else self.root, allow_not_found=True)
        return [info.base_name for info in self.fs.get_file_info(selector) if info.type == pafs.FileType.File]

    def size(self, name: str) -> int | None:
        if not self.remote:
            try:
                return (self.root / name).stat().st_size
            except OSError:
                return None
        from pyarrow import fs as pafs

        info = self.fs.get_file_info(self.path(name))
        return info.size if info.type == pafs.FileType.File else None

    def delete(self, name: str) -> None:
        if not self.remote:
            (self.root / name).unlink(missing_ok=True)
            return
        try:
            self.fs.delete_file(self.path(name))
        except (FileNotFoundError, OSError):
            pass

    def delete_folder(self, folder: str) -> None:
        if not self.remote:
            import shutil

            shutil.rmtree(self.root / folder, ignore_errors=True)
            return
        try:
            self.fs.delete_dir(self.path(folder))
        except (FileNotFoundError, OSError):
            pass

    def open_atomic(self, name: str):
        """A sink for one file: ``target`` (path or stream for a ParquetWriter), ``filesystem``, ``size()``,
        ``publish()`` (makes it visible under ``name``, returns its size) and ``discard()``."""
        if not self.remote:
            return _LocalSink(self.root / name)
        return _RemoteSink(self.fs, self.path(name))

    def open_input(self, name: str):
        """A readable file object for ``name`` (for pyarrow readers)."""
        if not self.remote:
            return open(self.root / name, "rb")
        return self.fs.open_input_file(self.path(name))
