"""Build real, signed bundle tars for the server tests: a tiny ONNX model made with
onnx.helper and golden samples, sealed with edgefleet.bundle (no compiler involved)."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from edgefleet.bundle import (
    GoldenSamples,
    Lineage,
    Manifest,
    ModelInterface,
    TensorSpec,
    load_signing_key,
    pack_bundle,
    seal_bundle,
)
from edgefleet.bundle.manifest import Evidence

PROFILE = "x86-64/avx512-vnni"
OTHER_PROFILE = "raspberry-pi/4b"


def tiny_onnx() -> bytes:
    """y = x * 2 + 1 over a (batch, 4) float input."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    two = helper.make_tensor("two", TensorProto.FLOAT, [1], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [
            helper.make_node("Mul", ["x", "two"], ["t"]),
            helper.make_node("Add", ["t", "one"], ["y"]),
        ],
        "tiny",
        [x],
        [y],
        initializer=[two, one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def make_bundle(
    out_dir: Path,
    key_path: Path,
    *,
    name: str = "tiny",
    version: str = "1.0.0",
    profile: str = PROFILE,
) -> Path:
    """Seal and pack a bundle; returns the tar path (``out_dir/<name>-<version>-<n>.tar``)."""
    stem = f"{name}-{version}-{profile.replace('/', '_')}"
    directory = out_dir / stem
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    model_bytes = tiny_onnx()
    (directory / "model.onnx").write_bytes(model_bytes)
    inputs = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.savez(directory / "golden.npz", x=inputs, y=inputs * 2 + 1)
    spec = TensorSpec(name="x", dtype="float32", shape=("batch", 4))
    manifest = Manifest(
        name=name,
        version=version,
        profile=profile,
        format="onnx",
        precision="fp32",
        model_file="model.onnx",
        interface=ModelInterface(inputs=(spec,), outputs=(replace(spec, name="y"),)),
        lineage=Lineage(
            source_model_sha256=hashlib.sha256(model_bytes).hexdigest(), compiler_version="test"
        ),
        evidence=Evidence(size_bytes=len(model_bytes)),
        golden=GoldenSamples(count=2, atol=1e-6),
    )
    seal_bundle(directory, manifest, load_signing_key(key_path))
    return pack_bundle(directory, out_dir / f"{stem}.tar")


def rewrite_member(
    tar_path: Path, out_path: Path, member: str, *, flip_byte: bool = False, drop: bool = False
) -> Path:
    """Copy a bundle tar, flipping one byte of ``member`` or leaving it out."""
    with tarfile.open(tar_path) as source, tarfile.open(out_path, "w") as target:
        found = False
        for info in source.getmembers():
            handle = source.extractfile(info)
            assert handle is not None
            data = handle.read()
            if info.name == member:
                found = True
                if drop:
                    continue
                if flip_byte:
                    middle = len(data) // 2
                    data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
            target.addfile(info, io.BytesIO(data))
    assert found, f"{member} not in {tar_path}"
    return out_path
