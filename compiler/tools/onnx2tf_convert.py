"""Convert an ONNX model to a float32 ``.tflite`` with onnx2tf, keeping the inputs' NCHW layout
(so calibration data fits as it is) at a static batch.

Run by the ``onnx2tf`` tool environment's Python (see :mod:`compiler.toolenv`), never imported
by the compiler. On failure: one line on stderr, exit status 1.

    python onnx2tf_convert.py --onnx model.onnx --out model.tflite --batch 1
"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--onnx", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    onnx: Any = importlib.import_module("onnx")
    model = onnx.load(args.onnx)
    initializers = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in initializers]
    onnx2tf: Any = importlib.import_module("onnx2tf")
    with tempfile.TemporaryDirectory(prefix="onnx2tf-") as folder:
        onnx2tf.convert(
            input_onnx_file_path=args.onnx,
            output_folder_path=folder,
            batch_size=args.batch,
            keep_ncw_or_nchw_or_ncdhw_input_names=inputs,
            non_verbose=True,
        )
        produced = sorted(Path(folder).glob("*_float32.tflite"))
        if not produced:
            raise RuntimeError(f"onnx2tf wrote no *_float32.tflite to {folder}")
        shutil.copyfile(produced[0], args.out)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as exc:  # noqa: BLE001 - the compiler shows this one line
        text = str(exc).strip().splitlines()
        sys.stderr.write(f"{type(exc).__name__}: {text[0] if text else ''}\n")
        sys.exit(1)
