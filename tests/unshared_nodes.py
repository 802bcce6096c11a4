"""A stand-in for a cluster node that is not one: drops ``--cluster URL --room NAME`` and runs a
bundled server alone, so every "node" has a room of its own.

``python tests/unshared_nodes.py MODULE [server args]``. The runner's cluster mode must
catch it (the room cases fail) while the cases about one process pass against each node.
"""

from __future__ import annotations

import runpy
import sys

_DROPPED = {"--cluster", "--room"}


def main() -> None:
    module, args = sys.argv[1], sys.argv[2:]
    kept: list[str] = []
    words = iter(args)
    for word in words:
        if word in _DROPPED:
            next(words, None)
        else:
            kept.append(word)
    sys.argv = [module, *kept]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
