"""``python fork_child.py``: a process forks while its pool holds connections; prints what each side used.

The parent opens three pooled connections, forks, and uses its pool again
after the child has worked and exited. The child uses the database through
the same API, then leaves the way a worker does: through the inherited
``asyncio.Runner``'s shutdown, then the interpreter's. Prints JSON with each
side's connection ids (the server's own: backend pid or connection id).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from sqlalchemy import text

from db_core import UnitOfWork, get_settings
from dbtests.queries import OWN_ID

CONNECTIONS = 3


async def connection_ids() -> list[int]:
    """The server's ids of the connections ``CONNECTIONS`` concurrent units of work used."""
    query = text(OWN_ID[get_settings().type or ""])

    async def one() -> int:
        async with UnitOfWork() as session:
            value = int(await session.scalar(query) or 0)
            await asyncio.sleep(0.05)  # all three at once: three connections
            return value

    return sorted(await asyncio.gather(*(one() for _ in range(CONNECTIONS))))


def main() -> None:
    with asyncio.Runner() as runner:
        before = runner.run(connection_ids())
        read, write = os.pipe()
        child = os.fork()
        if child == 0:
            os.close(read)
            with os.fdopen(write, "w") as out:
                json.dump(asyncio.run(connection_ids()), out)
            sys.exit(0)  # through the Runner's close and the interpreter's exit, as a worker would
        os.close(write)
        with os.fdopen(read) as inp:
            in_child = json.load(inp)
        _, status = os.waitpid(child, 0)
        after = runner.run(connection_ids())
    print(json.dumps({"before": before, "child": in_child, "after": after, "child_status": status}))


if __name__ == "__main__":
    main()
