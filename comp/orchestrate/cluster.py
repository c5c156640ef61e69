"""Starting, joining and leaving Ray.

Without an address comp starts a private local Ray (its own temp folder, no dashboard, a small object store, all
of this machine's CPUs and GPUs) and always shuts it down, so it never attaches to, nor stops, anyone else's.
With ``--address`` (``auto`` or ``HOST:PORT``) it joins a running cluster (``ray start --head`` / ``ray start
--address=...``) and leaves it running; :func:`check_shared_folder` first runs one job on every node to check that
the competition folder is there at the same path.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from comp.config import ConfigError
from comp.orchestrate import require

OBJECT_STORE_BYTES = 200 * 1024**2  # comp moves file paths, not tensors, through Ray


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
                echo: Callable[[str], None] = print) -> Iterator[dict]:
    """Ray started (local) or joined (``address``) for the duration of the block; yields {"local", "seconds",
    "resources"}."""
    require("ray")
    import ray

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process; comp starts and stops its own")
    t0 = time.perf_counter()
    tmp = None
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    if address is None:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a private loopback instance: no token to manage
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        # A short private folder: Ray's unix socket paths must stay under ~100 characters.
        tmp = tempfile.mkdtemp(prefix="comp-ray-", dir="/tmp" if os.path.isdir("/tmp") else None)
        kwargs = dict(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                      object_store_memory=OBJECT_STORE_BYTES, _temp_dir=tmp, log_to_driver=False,
                      configure_logging=True, logging_level="ERROR")
        if num_gpus is not None:
            kwargs["num_gpus"] = num_gpus
        with _neutral_cwd(tmp):
            ray.init(**kwargs)
    else:
        # Ray clusters started by `ray start --head` use token authentication by default (~/.ray/auth_token on
        # the head); a client joins with that token only when told to.
        token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
            (Path.home() / ".ray" / "auth_token").exists()
        if token and "RAY_AUTH_MODE" not in os.environ:
            os.environ["RAY_AUTH_MODE"] = "token"
            try:  # Ray caches its config when imported: refresh it, as ray does when it enables tokens itself
                from ray._raylet import Config

                Config.initialize("")
            except (ImportError, AttributeError):
                pass
        try:
            with _neutral_cwd(tempfile.gettempdir()):
                ray.init(address=address, log_to_driver=False, logging_level="ERROR")
        except (ConnectionError, RuntimeError, ValueError) as e:
            raise ConfigError(f"--address {address}: cannot join a Ray cluster there ({e}). Start one with "
                              f"`ray start --head` (then --address auto on that machine, or HOST:6379 elsewhere), "
                              f"or leave --address out to run on this machine only. A cluster with token "
                              f"authentication (Ray's default) needs its token here: copy the head's "
                              f"~/.ray/auth_token to this machine's ~/.ray/auth_token (or set RAY_AUTH_TOKEN)"
                              ) from None
    info = {"local": address is None, "seconds": time.perf_counter() - t0, "resources": ray.cluster_resources()}
    try:
        yield info
    finally:
        ray.shutdown()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _neutral_cwd(path: str) -> Iterator[None]:
    """Ray puts the driver's working folder first on its workers' sys.path (and starts them there): from a
    folder holding a competition folder named ``comp`` (as `comp sample` makes), workers would import that
    instead of the package. Start Ray from a neutral folder; jobs use absolute paths."""
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


def alive_nodes() -> list[dict]:
    import ray

    return [n for n in ray.nodes() if n.get("Alive")]


def check_shared_folder(config_path: Path) -> list[dict]:
    """Run a job on every node that checks ``config_path`` (comp.yaml, absolute) exists there; raise ConfigError
    naming the nodes that cannot see it. Returns one {"node", "host", "ok"} per node."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    @ray.remote(num_cpus=0)
    def probe(path: str) -> tuple[str, bool]:
        import socket

        return socket.gethostname(), os.path.isfile(path)

    nodes = alive_nodes()
    refs = [probe.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False))
            .remote(str(config_path)) for n in nodes]
    out = []
    for n, (host, ok) in zip(nodes, ray.get(refs, timeout=120)):
        out.append({"node": n["NodeManagerAddress"], "host": host, "ok": ok})
    bad = [o for o in out if not o["ok"]]
    if bad:
        names = ", ".join(f"{o['host']} ({o['node']})" for o in bad)
        raise ConfigError(
            f"{config_path} is not visible on node(s) {names}: comp launch needs the competition folder (with "
            f"comp.yaml, folds/ and runs/) at the same path on every node of the cluster. Put it on a shared "
            f"filesystem (NFS, a cloud file share) mounted at {config_path.parent} everywhere, or leave --address "
            f"out to run on this machine only")
    return out
