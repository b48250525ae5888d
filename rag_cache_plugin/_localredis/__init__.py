"""Throwaway real Redis servers (standalone, cluster, sentinel) for tests and development.

Each server is a ``redis-server`` on a free loopback port in a directory of its own,
keeps nothing on disk, and (unless told otherwise) dies with the Python process that
started it, even when that process is SIGKILLed: a small watchdog process, started once
per Python process, kills the servers and removes their directories when its pipe from
us reaches EOF.  That needs no ``prctl`` and works on any POSIX system.

``standalone`` holds ``LocalRedis``, ``cluster`` ``LocalCluster``, ``sentinel``
``LocalSentinel``, and ``state`` the cluster the command line leaves running; what they
share is in ``_ports``, ``_process`` and ``_commands``.
"""

from __future__ import annotations

from ._commands import _admin as _admin
from ._commands import _call as _call
from ._commands import _cluster_info as _cluster_info
from ._commands import _cluster_nodes as _cluster_nodes
from ._ports import HOST, free_port
from ._process import LocalRedisError
from ._process import _live as _live
from ._process import _pid_alive as _pid_alive
from .cluster import CLUSTER_SLOTS, LocalCluster, LocalNode
from .sentinel import LocalSentinel
from .standalone import LocalRedis
from .state import local_cluster_down, local_cluster_status, local_cluster_up

__all__ = [
    "CLUSTER_SLOTS",
    "HOST",
    "LocalCluster",
    "LocalNode",
    "LocalRedis",
    "LocalRedisError",
    "LocalSentinel",
    "free_port",
    "local_cluster_down",
    "local_cluster_status",
    "local_cluster_up",
]
