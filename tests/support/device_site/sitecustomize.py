"""Make this interpreter look like a device that installed only ``edgefleet[agent]``.

Put this folder first on PYTHONPATH: importing any server- or compiler-only package then
fails, as it would on a device, so a process that runs clean proves it never needs them.
"""

from __future__ import annotations

import importlib.abc
import sys

SERVER_AND_COMPILER_ONLY = frozenset(
    {"torch", "fastapi", "starlette", "uvicorn", "sqlalchemy", "amqtt", "onnx", "sklearn"}
)


class _DeviceOnly(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object, target: object = None) -> None:
        if fullname.split(".")[0] in SERVER_AND_COMPILER_ONLY:
            raise ImportError(f"{fullname} is not installed on a device (edgefleet[agent] only)")
        return None


sys.meta_path.insert(0, _DeviceOnly())
