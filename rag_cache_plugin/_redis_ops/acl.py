"""A least-privilege ACL user for the cache: its key prefix and the commands its
L3 tier, news feed and semantic layer send, nothing else."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from .._config import RedisConfig
from .._redisconn import node_client
from .topology import Topology

__all__ = ["CACHE_COMMANDS", "AclApply", "acl_rule", "apply_acl"]

# Read off the code that talks to Redis; keep in step with it (a test runs the cache
# as this user against standalone and cluster servers).
CACHE_COMMANDS: tuple[str, ...] = (
    # _tiers/redis.py: entries, tag sets, clear
    "get", "set", "mget", "del", "unlink", "sadd", "smembers", "pexpire", "persist", "scan",
    # _news.py through the tier: one stream per namespace
    "xadd", "xread", "xrevrange",
    # the semantic layer: vectors and feedback in hashes
    "hset", "hget", "hgetall", "hdel", "hscan", "hincrbyfloat",
    # connecting: kind detection, health, cluster map and command table, redirects.
    # (redis-py's CLIENT SETINFO on connect may be refused: it ignores the error, and
    # Redis 7.0 does not know the command at all.)
    "info", "ping", "echo", "hello", "auth", "command",
    "cluster|slots", "cluster|shards", "cluster|nodes", "cluster|info",
    "asking", "readonly", "readwrite", "select",
)


def acl_rule(config: RedisConfig, *, user: str = "ragcache", password: str | None = None,
             commands: Sequence[str] = CACHE_COMMANDS) -> tuple[str, str]:
    """``(rule, password)``: the ``ACL SETUSER`` arguments (also an ACL-file line
    after ``user <name>``).  A password is generated when none is given."""
    pw = password or secrets.token_urlsafe(24)
    prefix = config.prefix
    # Entries, tags and news live under "<prefix>:", feedback under "<prefix>~".
    parts = ["reset", "on", f">{pw}", f"~{prefix}:*", f"~{prefix}~*", "resetchannels",
             "-@all", *(f"+{c}" for c in commands)]
    return " ".join(parts), pw


@dataclass
class AclApply:
    user: str
    nodes: dict[str, str] = field(default_factory=dict)
    """address -> "ok" or the error."""
    saved: dict[str, str] = field(default_factory=dict)
    """address -> result of ACL SAVE (only where the server has an ACL file)."""

    @property
    def ok(self) -> bool:
        return bool(self.nodes) and all(v == "ok" for v in self.nodes.values())


def apply_acl(admin: RedisConfig, topology: Topology, rule: str, *, user: str = "ragcache",
              timeout: float = 2.0) -> AclApply:
    """``ACL SETUSER`` on every data node: ACLs are per server, a cluster does not
    spread them, and a replica promoted tomorrow must know the user too."""
    out = AclApply(user)
    for node in topology.data_nodes:
        with contextlib.closing(node_client(admin, node.host, node.port,
                                            timeout=timeout)) as c:
            try:
                c.execute_command("ACL", "SETUSER", user, *rule.split())  # type: ignore[no-untyped-call]
            except (redis.RedisError, OSError) as exc:
                out.nodes[node.address] = str(exc)
                continue
            out.nodes[node.address] = "ok"
            with contextlib.suppress(redis.RedisError, OSError):
                # Fails without an ACL file: fine.
                c.execute_command("ACL", "SAVE")  # type: ignore[no-untyped-call]
                out.saved[node.address] = "ok"
    return out
