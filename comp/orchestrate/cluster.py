"""Starting, joining and leaving Ray.

Without an address comp starts a private local Ray (its own temp folder, no dashboard, a small object store, all
of this machine's CPUs and GPUs) and always shuts it down, so it never attaches to, nor stops, anyone else's. It is
private: every Ray process listens on 127.0.0.1 only, and it runs with token authentication, its random token in
the 0700 temp folder (:func:`local_ray_env`); the folder of a session killed before it could remove it is swept by
the next one (:func:`sweep_stale_temp_dirs`). With ``--address`` (``auto`` or ``HOST:PORT``) it joins a running
cluster (``ray start --head`` / ``ray start --address=...``) with the cluster's own token authentication and
leaves it running; :func:`check_shared_folder` first runs one job on every node to check that the competition
folder is there at the same path.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from comp.config import ConfigError
from comp.files import working_dir
from comp.orchestrate import require
from comp.orchestrate.locks import identity_alive, process_identity

OBJECT_STORE_BYTES = 200 * 1024**2  # comp moves file paths, not tensors, through Ray
TEMP_PREFIX = "comp-ray-"
LOOPBACK = "127.0.0.1"


@contextmanager
def ray_session(address: str | None = None, num_cpus: int | None = None, num_gpus: int | None = None,
                echo: Callable[[str], None] = print) -> Iterator[dict]:
    """Ray started (local) or joined (``address``) for the duration of the block; yields {"local", "seconds",
    "resources", "temp_dir"}."""
    require("ray")
    import ray

    if ray.is_initialized():
        raise RuntimeError("Ray is already initialised in this process; comp starts and stops its own")
    t0 = time.perf_counter()
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        sweep_stale_temp_dirs()
        tmp = make_temp_dir()
        try:
            # Ray makes its temp folder world-writable (0777): it goes inside ours (0700), which no one else enters.
            with local_ray_env(tmp):
                kwargs = dict(num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                              object_store_memory=OBJECT_STORE_BYTES, _temp_dir=os.path.join(tmp, "r"),
                              log_to_driver=False,
                              configure_logging=True, logging_level="ERROR", _node_ip_address=LOOPBACK)
                if num_gpus is not None:
                    kwargs["num_gpus"] = num_gpus
                # Ray puts the driver's working folder first on its workers' sys.path (and starts them there):
                # from a folder holding a competition folder named `comp` (as `comp sample` makes), workers would
                # import that instead of the package. Start Ray from a neutral folder; jobs use absolute paths.
                with working_dir(tmp):
                    ray.init(**kwargs)
                try:
                    yield _info(ray, True, t0, tmp)
                finally:
                    ray.shutdown()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    _join(ray, address)
    try:
        yield _info(ray, False, t0, None)
    finally:
        ray.shutdown()


def _info(ray, local: bool, t0: float, tmp: str | None) -> dict:
    return {"local": local, "seconds": time.perf_counter() - t0, "resources": ray.cluster_resources(),
            "temp_dir": tmp}


def _join(ray, address: str) -> None:
    """Join a running cluster with the cluster's own authentication (token auth is Ray's default for `ray start
    --head`: the head's ~/.ray/auth_token, or RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH here)."""
    token = os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH") or \
        (Path.home() / ".ray" / "auth_token").exists()
    if token and "RAY_AUTH_MODE" not in os.environ:
        os.environ["RAY_AUTH_MODE"] = "token"
        _refresh_ray_config()
    try:
        with working_dir(tempfile.gettempdir()):  # a neutral folder, as above
            ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as e:  # AuthenticationError too
        raise ConfigError(f"--address {address}: cannot join a Ray cluster there ({e}). Start one with "
                          f"`ray start --head` (then --address auto on that machine, or HOST:6379 elsewhere), "
                          f"or leave --address out to run on this machine only. A cluster with token "
                          f"authentication (Ray's default) needs its token here: copy the head's "
                          f"~/.ray/auth_token to this machine's ~/.ray/auth_token (mode 600), or set "
                          f"RAY_AUTH_TOKEN_PATH") from None


def _refresh_ray_config() -> None:
    """Ray reads RAY_AUTH_MODE and its token once and caches them: re-read them, as Ray does when it turns token
    authentication on itself (ray._private.authentication)."""
    try:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()
    except (ImportError, AttributeError):
        pass


# The environment of a private local Ray: token authentication with its own token, and the loopback address.
# RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 is how Ray itself keeps a local instance on 127.0.0.1 (it is read as
# ray_constants.ENABLE_RAY_CLUSTER): without it Ray turns 127.0.0.1 into this machine's LAN address, and
# gcs_server, the raylet (node and object manager), the workers and the driver listen on it.
_LOCAL_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")


@contextmanager
def local_ray_env(tmp: str) -> Iterator[str]:
    """Inside: RAY_AUTH_MODE=token with a fresh random token in ``tmp``/auth_token (0600; ``tmp`` is 0700), and
    Ray's node address pinned to 127.0.0.1. Everything is restored after. Yields the token file's path."""
    from ray._private import ray_constants

    token_path = Path(tmp) / "auth_token"
    fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secrets.token_hex(32))
    saved = {k: os.environ.get(k) for k in _LOCAL_ENV}
    saved_cluster = ray_constants.ENABLE_RAY_CLUSTER
    os.environ.pop("RAY_AUTH_TOKEN", None)  # it would win over the token file
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_path),
                      RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0")
    ray_constants.ENABLE_RAY_CLUSTER = False
    _refresh_ray_config()
    try:
        yield str(token_path)
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = saved_cluster
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _refresh_ray_config()


# ---------------------------------------------------------------- the private temp folder

OWNER_FILE = "comp-owner.json"


def temp_root() -> str:
    return "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()


def make_temp_dir() -> str:
    """A fresh private folder /tmp/comp-ray-XXXX (0700; Ray's unix socket paths must stay under ~100 characters),
    with comp-owner.json naming this process (boot id, pid and start time), so a later launch can tell that a
    folder left by a killed one is stale."""
    tmp = tempfile.mkdtemp(prefix=TEMP_PREFIX, dir=temp_root())  # 0700
    os.chmod(tmp, 0o700)
    with open(Path(tmp) / OWNER_FILE, "w", encoding="utf-8") as f:
        json.dump(process_identity(), f)
    return tmp


def sweep_stale_temp_dirs(root: str | None = None) -> list[str]:
    """Remove the /tmp/comp-ray-* folders of this user whose owner process is gone (a SIGKILLed launch cannot
    remove its own); returns the paths removed. A folder without a readable owner record is left alone unless
    it is older than a day."""
    removed = []
    for p in Path(root or temp_root()).glob(TEMP_PREFIX + "*"):
        try:
            st = p.lstat()
            if not p.is_dir() or p.is_symlink() or st.st_uid != os.getuid():
                continue
            try:
                owner = json.loads((p / OWNER_FILE).read_text(encoding="utf-8"))
                stale = not identity_alive(owner)
            except (OSError, ValueError):
                stale = time.time() - st.st_mtime > 86400
        except OSError:
            continue
        if stale:
            shutil.rmtree(p, ignore_errors=True)
            removed.append(str(p))
    return removed


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
