"""Convert a ``torch.export`` program to a float ``.tflite`` with litert-torch.

Run by the ``litert-torch`` tool environment's Python (see :mod:`compiler.toolenv`), never
imported by the compiler; it imports only torch and litert_torch. On failure: one line on
stderr, exit status 1.

    python litert_convert.py --program model.pt2 --out model.tflite
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--program", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import torch

    program = torch.export.load(args.program)
    litert_torch: Any = importlib.import_module("litert_torch")  # seconds: after the cheap checks
    example, _ = program.example_inputs
    with torch.no_grad():
        edge_model = litert_torch.convert(program.module(), tuple(example))
    edge_model.export(args.out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # noqa: BLE001 - the compiler shows this one line
        text = str(exc).strip().splitlines()
        sys.stderr.write(f"{type(exc).__name__}: {text[0] if text else ''}\n")
        sys.exit(1)
