import hashlib
import os
import stat
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from loopstack.core.artifacts import ArtifactStore
from loopstack.core.errors import ConfigError, IntegrityError, NotFoundError, ValidationError


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@given(data=st.binary(max_size=4096))
def test_round_trip_is_addressed_by_sha256(tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    store = ArtifactStore(str(tmp_path_factory.mktemp("a")))
    digest = store.put_bytes(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get_bytes(digest) == data


def test_same_bytes_are_stored_once(store: ArtifactStore) -> None:
    first = store.put_bytes(b"model")
    second = store.put_bytes(b"model")
    assert first == second
    files = [p for p in Path(store.root).rglob("*") if p.is_file()]
    assert len(files) == 1


def test_put_file_streams_and_matches_put_bytes(store: ArtifactStore, tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(os.urandom(3 << 20))
    assert store.put_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("damage", ["tamper", "truncate"])
def test_damaged_object_is_refused(store: ArtifactStore, damage: str) -> None:
    digest = store.put_bytes(b"x" * 1000)
    path = Path(store.path_of(digest))
    if damage == "tamper":
        path.write_bytes(b"y" * 1000)
    else:
        path.write_bytes(b"x" * 10)
    with pytest.raises(IntegrityError, match=digest):
        store.get_bytes(digest)


def test_missing_object_is_not_found(store: ArtifactStore) -> None:
    with pytest.raises(NotFoundError, match="missing"):
        store.get_bytes("0" * 64)


def test_digest_is_validated_so_paths_cannot_escape(store: ArtifactStore) -> None:
    with pytest.raises(ValidationError, match="sha256"):
        store.get_bytes("../../etc/passwd")


def test_failed_write_leaves_no_object(store: ArtifactStore, tmp_path: Path) -> None:
    class Exploding:
        def read(self, _size: int = -1) -> bytes:
            raise OSError("disk gone")

    target = store.path_of("a" * 64)
    with pytest.raises(OSError, match="disk gone"):
        store.fs.write_atomic(target, Exploding())  # type: ignore[arg-type]
    assert not Path(target).exists()
    assert not [p for p in Path(target).parent.iterdir() if p.name.startswith(".incoming-")]


def test_fsspec_backend_round_trip() -> None:
    store = ArtifactStore("memory://loopstack-test")
    digest = store.put_bytes(b"remote bytes")
    assert store.get_bytes(digest) == b"remote bytes"


def test_a_location_that_cannot_be_made_names_itself(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    store = ArtifactStore(str(tmp_path / "file" / "artifacts"))
    with pytest.raises(ConfigError, match=r"cannot store artifacts in .*/file/artifacts/.*set `artifacts:`"):
        store.put_bytes(b"model")


@pytest.mark.parametrize("damage", ["tamper", "truncate"])
def test_storing_the_bytes_again_repairs_a_damaged_object(store: ArtifactStore, tmp_path: Path, damage: str) -> None:
    data = b"x" * 1000
    digest = store.put_bytes(data)
    Path(store.path_of(digest)).write_bytes(b"y" * 1000 if damage == "tamper" else b"x" * 10)
    assert store.put_bytes(data) == digest  # what the IntegrityError message tells the user to do
    assert store.get_bytes(digest) == data
    Path(store.path_of(digest)).write_bytes(b"x" * 10)
    source = tmp_path / "source"
    source.write_bytes(data)
    assert store.put_file(source) == digest
    assert store.get_bytes(digest) == data


def test_a_file_that_changes_while_it_is_stored_is_refused(store: ArtifactStore, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import loopstack.core.artifacts as artifacts

    path = tmp_path / "checkpoint"
    path.write_bytes(b"a" * 5000)
    original = artifacts.sha256_file

    def hash_then_grow(file: str | os.PathLike[str]) -> str:
        digest = original(file)
        with open(file, "ab") as handle:  # a training loop still appending to it
            handle.write(b"b" * 100)
        return digest

    monkeypatch.setattr(artifacts, "sha256_file", hash_then_grow)
    with pytest.raises(ValidationError, match="changed while it was stored"):
        store.put_file(path)
    stored = [p for p in Path(store.root).rglob("*") if p.is_file()]
    assert stored == []  # nothing under a digest its bytes do not have, no temporary left


def test_get_file_streams_verifies_and_leaves_no_partial_destination(store: ArtifactStore, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(3 * (1 << 20) + 17)
    digest = store.put_bytes(data)
    monkeypatch.setattr(store.fs, "read", lambda path: pytest.fail("get_file read the whole artifact into memory"))
    target = store.get_file(digest, tmp_path / "out" / "model.bin")
    assert target.read_bytes() == data
    Path(store.path_of(digest)).write_bytes(data[:100])
    with pytest.raises(IntegrityError, match=digest):
        store.get_file(digest, tmp_path / "out" / "other.bin")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.bin"]
    with pytest.raises(NotFoundError, match="missing"):
        store.get_file("0" * 64, tmp_path / "out" / "none.bin")


def test_stored_objects_are_readable_as_the_umask_allows(store: ArtifactStore) -> None:
    previous = os.umask(0o022)
    try:
        digest = store.put_bytes(b"shared with the team")
    finally:
        os.umask(previous)
    assert Path(store.path_of(digest)).stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600


def test_a_writer_killed_mid_copy_leaves_a_temporary_that_the_next_write_there_removes(store: ArtifactStore) -> None:
    """`.incoming-*` files of a kill -9 were never removed; one still being written (recent) stays."""
    folder = Path(store.path_of(hashlib.sha256(b"next").hexdigest())).parent
    folder.mkdir(parents=True)
    stale, fresh = folder / ".incoming-killed", folder / ".incoming-in-flight"
    stale.write_bytes(b"half a model")
    fresh.write_bytes(b"being written")
    two_hours_ago = time.time() - 7200
    os.utime(stale, (two_hours_ago, two_hours_ago))
    store.put_bytes(b"next")
    assert not stale.exists()
    assert fresh.exists()


def test_the_folder_is_synced_after_the_rename(store: ArtifactStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without it, a power loss right after put_bytes returned could lose the object's directory entry."""
    synced: list[bool] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store.put_bytes(b"durable")
    if os.name == "posix":
        assert synced[0] is False and True in synced[1:]  # the bytes first, then the folder holding the name


@pytest.mark.parametrize("root", ["local", "memory://loopstack-size-test"])
def test_size_is_the_stored_objects_or_none_when_it_is_missing(root: str, tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path) if root == "local" else root)
    digest = store.put_bytes(b"x" * 1234)
    assert store.size(digest) == 1234
    assert store.size("0" * 64) is None
