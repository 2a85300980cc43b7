"""`vnetctl fabric up/down/repair` take turns on one lock, and a wait for it ends with a readable
error instead of hanging (pure: a temporary root directory, no root needed)."""

from __future__ import annotations

import fcntl
import os

import pytest

from vnetcni.sim import fabric
from vnetcni.sim.errors import SimError


@pytest.fixture
def sim_root(tmp_path, monkeypatch):
    monkeypatch.setenv("VNET_SIM_ROOT", str(tmp_path))
    return tmp_path


def test_a_held_fabric_lock_ends_the_wait_with_a_readable_error(sim_root):
    holder = os.open(sim_root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(SimError, match="another `vnetctl fabric` operation has held"):
            with fabric.fabric_lock(timeout=0.2):
                pytest.fail("entered a lock someone else holds")
    finally:
        os.close(holder)


def test_the_fabric_lock_is_taken_once_free_and_released_after(sim_root):
    with fabric.fabric_lock(timeout=0.2):
        probe = os.open(sim_root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(probe)
    with fabric.fabric_lock(timeout=0.2):
        pass
