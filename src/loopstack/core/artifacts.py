"""A content-addressed artifact store: bytes are stored under their sha256.

Why content addressing: the same model or data set logged twice is stored
once, a digest recorded in the metadata DB pins exact bytes, and every read
can prove the bytes are still those bytes. A read whose hash does not match
raises `IntegrityError` before the caller sees a single byte, so a tampered
or truncated pickle is never unpickled.

Writes are atomic: bytes go to a temporary object first and are renamed into
place, so a crash mid-write leaves no half object under a valid digest.
Local paths use the OS directly (fast, no fsspec import); any other URL
(``s3://``, ``gs://``, ``memory://``...) goes through fsspec.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import IO, Protocol

from loopstack.core.errors import ConfigError, IntegrityError, NotFoundError, ValidationError

CHUNK = 1 << 20
_HEX = set("0123456789abcdef")


class Filesystem(Protocol):
    """The few file operations the store needs from a backend."""

    def exists(self, path: str) -> bool: ...
    def read(self, path: str) -> bytes: ...
    def open_read(self, path: str) -> IO[bytes]: ...
    def write_atomic(self, path: str, source: IO[bytes]) -> None: ...


class LocalFilesystem:
    """A directory on local disk; atomic through os.replace."""

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def read(self, path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    def open_read(self, path: str) -> IO[bytes]:
        return open(path, "rb")

    def write_atomic(self, path: str, source: IO[bytes]) -> None:
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot store artifacts in {directory}: {error.strerror}; set `artifacts:` in "
                              "loopstack.yaml to a folder you can write to") from error
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=".incoming-")
        try:
            with os.fdopen(fd, "wb") as handle:
                shutil.copyfileobj(source, handle, CHUNK)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise


class FsspecFilesystem:
    """Any fsspec filesystem; the rename is a server-side move where supported."""

    def __init__(self, url: str) -> None:
        from fsspec.core import url_to_fs

        self.fs, _ = url_to_fs(url)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def read(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(path))

    def open_read(self, path: str) -> IO[bytes]:
        return self.fs.open(path, "rb")

    def write_atomic(self, path: str, source: IO[bytes]) -> None:
        temporary = f"{path.rsplit('/', 1)[0]}/.incoming-{uuid.uuid4().hex}"
        with self.fs.open(temporary, "wb") as handle:
            shutil.copyfileobj(source, handle, CHUNK)
        self.fs.mv(temporary, path)


class ArtifactStore:
    """Store and fetch bytes by sha256 digest.

    Examples
    --------
    >>> import tempfile
    >>> store = ArtifactStore(tempfile.mkdtemp())
    >>> digest = store.put_bytes(b"hello")
    >>> store.get_bytes(digest)
    b'hello'
    """

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        is_local = "://" not in root or root.startswith("file://")
        if is_local:
            self.root = str(Path(root.removeprefix("file://")).resolve())
        self.fs: Filesystem = LocalFilesystem() if is_local else FsspecFilesystem(root)

    def path_of(self, digest: str) -> str:
        _check_digest(digest)
        return f"{self.root}/objects/{digest[:2]}/{digest[2:]}"

    def exists(self, digest: str) -> bool:
        return self.fs.exists(self.path_of(digest))

    def put_bytes(self, data: bytes) -> str:
        """Store bytes, returning their digest; storing the same bytes again is free."""
        import io

        digest = hashlib.sha256(data).hexdigest()
        if not self.exists(digest):
            self.fs.write_atomic(self.path_of(digest), io.BytesIO(data))
        return digest

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Store a file's bytes, streaming; returns the digest."""
        digest = sha256_file(path)
        if not self.exists(digest):
            with open(path, "rb") as source:
                self.fs.write_atomic(self.path_of(digest), source)
        return digest

    def get_bytes(self, digest: str) -> bytes:
        """The bytes stored under `digest`, verified before they are returned."""
        data = self._read(digest)
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise IntegrityError(
                f"artifact {digest} is corrupt: its bytes hash to {actual} "
                f"({len(data)} bytes at {self.path_of(digest)}); it was modified or "
                "truncated after it was stored. Restore it from a backup or log it again"
            )
        return data

    def get_file(self, digest: str, destination: str | os.PathLike[str]) -> Path:
        """Write the verified bytes of `digest` to `destination` and return its path."""
        target = Path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(self.get_bytes(digest))
        return target

    def _read(self, digest: str) -> bytes:
        path = self.path_of(digest)
        try:
            return self.fs.read(path)
        except FileNotFoundError:
            raise NotFoundError(
                f"artifact {digest} is missing from the store at {self.root}; "
                "it was deleted, or the project points at another artifacts location"
            ) from None


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _check_digest(digest: str) -> None:
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise ValidationError(f"{digest!r} is not a sha256 digest; expected 64 lowercase hex characters")
