"""Generate ``hardware_profiles/schema.json``, the JSON Schema editors use to check profiles.

Regenerate after changing :mod:`hardware_profiles.schema`::

    python -m hardware_profiles.schema_export          # rewrite schema.json
    python -m hardware_profiles.schema_export --check  # exit 1 if it is stale
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from edgefleet.codec_schema import json_schema
from hardware_profiles.schema import HardwareProfile

SCHEMA_PATH = Path(__file__).with_name("schema.json")
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"

logger = logging.getLogger(__name__)


def schema_text() -> str:
    """The JSON Schema of :class:`HardwareProfile`, as committed (2-space indent, newline)."""
    schema = {"$schema": JSON_SCHEMA_DIALECT, **json_schema(HardwareProfile)}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def is_stale(path: Path = SCHEMA_PATH) -> bool:
    """Whether ``path`` is missing or differs from what the model generates now."""
    try:
        return path.read_text(encoding="utf-8") != schema_text()
    except FileNotFoundError:
        return True


def write_schema(path: Path = SCHEMA_PATH) -> Path:
    path.write_text(schema_text(), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hardware_profiles.schema_export")
    parser.add_argument("--check", action="store_true", help="exit 1 if schema.json is stale")
    parser.add_argument("--output", type=Path, default=SCHEMA_PATH, help="where to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        if is_stale(args.output):
            logger.error("%s is stale: run python -m hardware_profiles.schema_export", args.output)
            return 1
        logger.info("%s is up to date", args.output)
        return 0
    logger.info("wrote %s", write_schema(args.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
