"""Ray, optionally: import it only when asked for, and connect to a cluster (or start a local one).

Ray is the ``ray`` extra (``pip install 'fastdpr[ray]'``); nothing else in fastdpr imports it, so the
default build and search stay one process with no Ray.
"""

from __future__ import annotations

import logging
from types import ModuleType

from fastdpr.common.errors import MissingDependencyError

RAY_EXTRA_HINT = "pip install 'fastdpr[ray]'"

#: A worker process that dies (OOM kill, node lost) is restarted and its call retried this many times;
#: Ray Data's default is forever, which turns a deterministic crash (a model that cannot load) into a
#: hang.
MAX_RESTARTS = 4


def require_ray() -> ModuleType:
    """The ``ray`` module with Ray Data, or :class:`MissingDependencyError` saying how to install it."""
    try:
        import ray
        import ray.data  # the build needs Ray Data, not only Ray Core
    except ImportError as exc:
        raise MissingDependencyError(f"running on Ray needs the ray extra: {RAY_EXTRA_HINT} ({exc})") from exc
    return ray


def connect(address: str | None) -> ModuleType:
    """Ray, connected: to the cluster at ``address`` (``auto``, ``ray://host:10001``, ``host:6379``) or, when
    ``address`` is empty or None, to a new local cluster on this machine. A process already connected
    (``ray.init`` called by the caller) keeps its connection, whatever ``address`` says."""
    ray = require_ray()
    if not ray.is_initialized():
        # log_to_driver=False: Ray copies its workers' and raylet's log lines (a raylet's "disk over 95% full"
        # included) to this process's stdout, where fastdpr prints results (JSON lines for scripts). They stay
        # in the Ray session's log files; a worker's exception still reaches us as a Python exception.
        if address:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
        else:
            ray.init(logging_level=logging.WARNING, include_dashboard=False, log_to_driver=False)
    return ray


def cluster_cpus(ray: ModuleType) -> int:
    """CPUs the connected cluster has (at least 1)."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def largest_node_cpus(ray: ModuleType) -> int:
    """CPUs of the connected cluster's largest live node (at least 1): what one task may reserve."""
    return max([1] + [int(node.get("Resources", {}).get("CPU", 0)) for node in ray.nodes() if node.get("Alive")])
