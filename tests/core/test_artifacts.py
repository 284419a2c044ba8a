import hashlib
import os
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
