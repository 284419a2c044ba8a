"""A content-addressed artifact store: bytes are stored under their sha256.

Why content addressing: the same model or data set logged twice is stored
once, a digest recorded in the metadata DB pins exact bytes, and every read
can prove the bytes are still those bytes. A read whose hash does not match
raises `IntegrityError` before the caller sees a single byte, so a tampered
or truncated pickle is never unpickled.

Writes are atomic: bytes go to a temporary object first and are renamed into
place, so a crash mid-write leaves no half object under a valid digest. On
local disk the bytes and then the folder are synced, so a stored object
survives a power loss, and a killed writer's temporary is removed by a later
write to its folder once it is an hour old. A file is hashed again as it is
copied, and refused if its bytes changed in between, so an object always
holds the bytes of its digest. Storing bytes
whose object was damaged writes it again: logging it again repairs it.
Local paths use the OS directly (fast, no fsspec import); any other URL
(``s3://``, ``gs://``, ``memory://``...) goes through fsspec.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path
from typing import IO, Protocol

from loopstack.core.errors import ConfigError, IntegrityError, NotFoundError, ValidationError
from loopstack.core.paths import fsync_folder

CHUNK = 1 << 20
INCOMING = ".incoming-"  # the prefix of a write's temporary object, renamed into place when complete
STALE_AFTER_S = 3600.0  # a temporary untouched this long is a killed writer's, never a live one's
_HEX = set("0123456789abcdef")


class Filesystem(Protocol):
    """The few file operations the store needs from a backend."""

    def exists(self, path: str) -> bool: ...
    def size(self, path: str) -> int | None: ...
    def read(self, path: str) -> bytes: ...
    def open_read(self, path: str) -> IO[bytes]: ...
    def write_atomic(self, path: str, source: IO[bytes]) -> None: ...


class LocalFilesystem:
    """A directory on local disk; atomic through os.replace, durable through fsync of the bytes and the folder."""

    def __init__(self) -> None:
        self._swept: dict[str, float] = {}  # folder -> time.monotonic() of its last sweep for stale temporaries

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def size(self, path: str) -> int | None:
        try:
            return os.path.getsize(path)
        except OSError:
            return None

    def read(self, path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    def open_read(self, path: str) -> IO[bytes]:
        return open(path, "rb")

    def write_atomic(self, path: str, source: IO[bytes]) -> None:
        directory = os.path.dirname(path)
        new_folder = not os.path.isdir(directory)
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as error:
            raise ConfigError(f"cannot store artifacts in {directory}: {error.strerror}; set `artifacts:` in "
                              "loopstack.yaml to a folder you can write to") from error
        self._sweep(directory)
        fd, temporary = tempfile.mkstemp(dir=directory, prefix=INCOMING)
        try:
            with os.fdopen(fd, "wb") as handle:
                os.chmod(temporary, 0o666 & ~_umask())  # mkstemp's 0600 would hide it from others sharing the store
                shutil.copyfileobj(source, handle, CHUNK)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        fsync_folder(directory)
        if new_folder:  # the folder's own name, in its parent, must survive too
            fsync_folder(os.path.dirname(directory))

    def _sweep(self, directory: str) -> None:
        """Remove the temporaries that a writer killed mid-copy (kill -9, power loss) left in `directory`.

        Once per folder and hour, so a write does not list its folder each time. Only files untouched
        for `STALE_AFTER_S` go: a live writer's copy has a recent mtime, as it writes.
        """
        now, last = time.monotonic(), self._swept.get(directory)
        if last is not None and now - last < STALE_AFTER_S:
            return
        self._swept[directory] = now
        cutoff = time.time() - STALE_AFTER_S
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.startswith(INCOMING):
                    # gone meanwhile (another process swept it), or another user's to remove: not this write's concern
                    with contextlib.suppress(OSError):
                        if entry.stat(follow_symlinks=False).st_mtime < cutoff:
                            os.unlink(entry.path)


class FsspecFilesystem:
    """Any fsspec filesystem; the rename is a server-side move where supported."""

    def __init__(self, url: str) -> None:
        from fsspec.core import url_to_fs

        self.fs, _ = url_to_fs(url)

    def exists(self, path: str) -> bool:
        return bool(self.fs.exists(path))

    def size(self, path: str) -> int | None:
        try:
            return int(self.fs.size(path))
        except (FileNotFoundError, OSError):
            return None

    def read(self, path: str) -> bytes:
        return bytes(self.fs.cat_file(path))

    def open_read(self, path: str) -> IO[bytes]:
        return self.fs.open(path, "rb")

    def write_atomic(self, path: str, source: IO[bytes]) -> None:
        temporary = f"{path.rsplit('/', 1)[0]}/{INCOMING}{uuid.uuid4().hex}"
        try:
            with self.fs.open(temporary, "wb") as handle:
                shutil.copyfileobj(source, handle, CHUNK)
        except BaseException:
            if self.fs.exists(temporary):
                self.fs.rm(temporary)
            raise
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

    def size(self, digest: str) -> int | None:
        """The stored object's size in bytes, None if it is missing: a cheap check that it is whole (a
        cache entry records the size it stored; hashing to be sure would read the whole object)."""
        return self.fs.size(self.path_of(digest))

    def put_bytes(self, data: bytes) -> str:
        """Store bytes, returning their digest; storing the same bytes again writes nothing."""
        import io

        digest = hashlib.sha256(data).hexdigest()
        if not self._intact(digest):
            self.fs.write_atomic(self.path_of(digest), io.BytesIO(data))
        return digest

    def put_file(self, path: str | os.PathLike[str]) -> str:
        """Store a file's bytes, streaming; returns the digest.

        The copy is hashed as it is read and refused (nothing stored) when the
        file changed after it was hashed, e.g. a checkpoint still being written.
        """
        digest = sha256_file(path)
        if not self._intact(digest):
            with open(path, "rb") as source:
                self.fs.write_atomic(self.path_of(digest), _Checked(source, digest, os.fspath(path)))
        return digest

    def get_bytes(self, digest: str) -> bytes:
        """The bytes stored under `digest`, verified before they are returned."""
        data = self._read(digest)
        self._verify(digest, hashlib.sha256(data).hexdigest(), len(data))
        return data

    def get_file(self, digest: str, destination: str | os.PathLike[str]) -> Path:
        """Write the verified bytes of `digest` to `destination` and return its path.

        Streams in chunks (an artifact may be larger than memory) into a
        temporary file beside `destination`, renamed into place only once the
        hash matches: a damaged artifact leaves no file behind.
        """
        target = Path(destination)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.incoming-")
        try:
            with os.fdopen(fd, "wb") as out, self._open(digest) as source:
                os.chmod(temporary, 0o666 & ~_umask())
                hasher, size = hashlib.sha256(), 0
                while chunk := source.read(CHUNK):
                    hasher.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
            self._verify(digest, hasher.hexdigest(), size)
            os.replace(temporary, target)
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise
        return target

    def _intact(self, digest: str) -> bool:
        """Whether an object is stored under `digest` whose bytes still hash to it."""
        try:
            with self.fs.open_read(self.path_of(digest)) as handle:
                return _sha256_stream(handle) == digest
        except (FileNotFoundError, NotADirectoryError):  # not stored, or the location is not a folder (yet)
            return False

    def _verify(self, digest: str, actual: str, size: int) -> None:
        if actual != digest:
            raise IntegrityError(
                f"artifact {digest} is corrupt: its bytes hash to {actual} "
                f"({size} bytes at {self.path_of(digest)}); it was modified or "
                "truncated after it was stored. Restore it from a backup or log it again"
            )

    def _read(self, digest: str) -> bytes:
        try:
            return self.fs.read(self.path_of(digest))
        except FileNotFoundError:
            raise self._missing(digest) from None

    def _open(self, digest: str) -> IO[bytes]:
        try:
            return self.fs.open_read(self.path_of(digest))
        except FileNotFoundError:
            raise self._missing(digest) from None

    def _missing(self, digest: str) -> NotFoundError:
        return NotFoundError(
            f"artifact {digest} is missing from the store at {self.root}; "
            "it was deleted, or the project points at another artifacts location"
        )


class _Checked:
    """A file being copied into the store, hashed as it is read: at its end, it raises
    (so the copy is not renamed into place) when the bytes are not those of `digest`."""

    def __init__(self, source: IO[bytes], digest: str, path: str) -> None:
        self.source, self.digest, self.path = source, digest, path
        self.hasher = hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        chunk = self.source.read(size)
        self.hasher.update(chunk)
        if not chunk and self.hasher.hexdigest() != self.digest:
            raise ValidationError(
                f"{self.path} changed while it was stored (it hashed to {self.digest}, then read as "
                f"{self.hasher.hexdigest()}); nothing was stored. Log it once whatever writes it has finished"
            )
        return chunk


def sha256_file(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as handle:
        return _sha256_stream(handle)


def _sha256_stream(handle: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def _umask() -> int:
    """The process umask: setting it is the portable way to read it, so it is put straight back."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _check_digest(digest: str) -> None:
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise ValidationError(f"{digest!r} is not a sha256 digest; expected 64 lowercase hex characters")
