"""Starting and stopping the local Ray a run uses: quiet (no dashboard, no auth-token file in $HOME), in its
own temp folder that is removed on exit, and whose leftovers from runs that died are removed by the next
start."""

from __future__ import annotations

import fcntl
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

from ._interrupts import reclaim_signals

#: Local Ray temp folders: /tmp/cpray<random>/ (Ray's socket paths must stay under 107 bytes), each holding
#: ``_OWNER`` locked by the driver that made it. A folder whose lock is free belongs to a dead run.
_TEMP_PREFIX = "cpray"
_OWNER = "codecpatch-owner.lock"
_ray_temp: tuple[Path, object] | None = None


def remove_stale_temp_dirs(parent: Path = Path("/tmp")) -> list[Path]:
    """Delete the Ray temp folders of codecpatch runs that died without cleaning up; returns them."""
    removed = []
    for folder in parent.glob(f"{_TEMP_PREFIX}*"):
        owner = folder / _OWNER
        try:
            with open(owner, "r+") as handle:  # not created: a folder without it is not ours
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: its driver is gone
        except (BlockingIOError, FileNotFoundError, NotADirectoryError, PermissionError):
            continue  # alive, or not one of ours
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def start_ray(address: str | None, cpus: float, gpus: float | None = None) -> bool:
    """Join ``address`` or start a quiet local Ray (no dashboard, own temp dir, no auth token in $HOME)."""
    global _ray_temp
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
        reclaim_signals()
        return True
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    remove_stale_temp_dirs()
    temp_dir = Path(tempfile.mkdtemp(prefix=_TEMP_PREFIX, dir="/tmp"))
    owner = open(temp_dir / _OWNER, "w")  # held (locked) for as long as this process runs Ray
    fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
    _ray_temp = (temp_dir, owner)
    try:
        ray.init(num_cpus=max(1, math.ceil(cpus)), num_gpus=gpus, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _temp_dir=str(temp_dir), runtime_env={"env_vars": {"RAY_AUTH_MODE": "disabled"}})
    except BaseException:
        stop_ray()
        raise
    reclaim_signals()
    return True


def stop_ray() -> None:
    """Shut down the Ray this process started and delete its temp folder."""
    global _ray_temp
    import ray

    try:
        ray.shutdown()
    finally:
        if _ray_temp is not None:
            temp_dir, owner = _ray_temp
            _ray_temp = None
            for _attempt in range(3):  # Ray's last processes may still be writing their logs there
                shutil.rmtree(temp_dir, ignore_errors=True)
                if not temp_dir.exists():
                    break
                time.sleep(0.3)
            if temp_dir.exists():
                (temp_dir / _OWNER).touch()  # unlocked: the next start removes what is left
            owner.close()
