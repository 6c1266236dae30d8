"""``python -m fleet_server.migrations revision MESSAGE``: autogenerate a revision."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from alembic import command

from fleet_server.db import alembic_config, create_db_engine


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "revision":
        sys.stderr.write("usage: python -m fleet_server.migrations revision MESSAGE\n")
        return 2
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_db_engine(f"sqlite:///{Path(scratch) / 'scratch.db'}")
        with engine.begin() as connection:
            config = alembic_config(connection)
            command.upgrade(config, "head")
            command.revision(config, message=argv[1], autogenerate=True)
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
