"""One room across many server processes, on Redis (spec/PROTOCOL.md §18), sans I/O.

:class:`ClusterRules` replaces a server's :class:`~protocol.server.ServerRules`; the server
drives its :class:`RedisLink`\\ s as it drives client sockets. Lua scripts decide each room
operation atomically (:mod:`protocol.cluster.scripts`).
"""

from .link import LinkState, RedisLink
from .rules import ClusterAddress, ClusterRules

__all__ = ["ClusterAddress", "ClusterRules", "LinkState", "RedisLink"]
