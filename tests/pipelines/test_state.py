"""The scheduler lease: a holder on this host is alive only while its process (pid and start time) is."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from loopstack.core.errors import ConflictError
from loopstack.core.project import Project
from loopstack.pipelines import state
from loopstack.tracking.processes import own_start_time


def _put_lease(project: Project, owner: str, ttl_s: float = 3600.0) -> None:
    now = time.time()
    with project.db.write() as connection:
        project.db.upsert(connection, project.db.table("loop_leases"),
                          [{"name": state.LEASE, "owner": owner, "heartbeat": now, "ttl_s": ttl_s, "started_at": now}],
                          keys=("name",), update=("owner", "heartbeat", "ttl_s", "started_at"))


def test_an_owner_token_names_the_process_start_time() -> None:
    host, pid, nonce, started = state.new_owner().split(":")
    assert host == state.HOST and int(pid) == os.getpid() and len(nonce) == 8
    assert float(started) == pytest.approx(own_start_time(), abs=0.01)


def test_a_reused_pid_does_not_keep_a_dead_holders_lease(tmp_path: Path) -> None:
    """The pid alone was trusted: a new process given a dead scheduler's pid kept its lease until the ttl."""
    me, started = os.getpid(), own_start_time()
    assert state._alive(f"{state.HOST}:{me}:abcd1234:{started:.2f}", 1.0, 30.0)
    assert not state._alive(f"{state.HOST}:{me}:abcd1234:{started - 5:.2f}", 1.0, 30.0)  # same pid, other process
    assert state._alive(f"{state.HOST}:{me}:abcd1234", 1.0, 30.0)  # an old token: the pid is all there is
    assert state._alive(f"elsewhere:{me}:abcd1234:{started - 5:.2f}", 1.0, 30.0)  # another host: the ttl decides
    assert not state._alive(f"{state.HOST}:{me}:abcd1234:{started:.2f}", 31.0, 30.0)
    with Project.init(tmp_path / "p", name="lease") as project:
        _put_lease(project, f"{state.HOST}:{me}:abcd1234:{started:.2f}")
        with pytest.raises(ConflictError, match="another loop scheduler"):
            state.acquire_lease(project, state.new_owner(), 30.0)
        _put_lease(project, f"{state.HOST}:{me}:abcd1234:{started - 5:.2f}")  # the pid now belongs to us
        owner = state.new_owner()
        state.acquire_lease(project, owner, 30.0)  # taken over at once, not after the hour-long ttl
        assert state.lease_holder(project)["owner"] == owner  # type: ignore[index]
