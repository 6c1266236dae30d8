"""Lay out, seal (hash + ed25519 signature) and tar one bundle per profile.

``OUT/<name>-<version>-<tag with '/' as '_'>/`` holds ``model.onnx``, ``golden.npz``,
``manifest.json`` and ``signature.json``; ``OUT/<same>.tar`` beside it is what the fleet server
takes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from compiler.errors import CompileError
from edgefleet.bundle import (
    MANIFEST_FILE,
    Evidence,
    GoldenSamples,
    Lineage,
    Manifest,
    ModelInterface,
    SigningKey,
    pack_bundle,
    seal_bundle,
)
from hardware_profiles.schema import ArtifactFormat, Precision

MODEL_FILE = {ArtifactFormat.ONNX: "model.onnx", ArtifactFormat.TFLITE: "model.tflite"}


@dataclass(frozen=True)
class PackedBundle:
    directory: Path
    tar: Path
    manifest: Manifest


def bundle_stem(name: str, version: str, tag: str) -> str:
    return f"{name}-{version}-{tag.replace('/', '_')}"


def prepare_directory(out: Path, stem: str) -> Path:
    """An empty bundle directory; a previous bundle of the same name is replaced."""
    directory = out / stem
    if directory.exists():
        if not directory.is_dir() or (
            any(directory.iterdir()) and not (directory / MANIFEST_FILE).is_file()
        ):
            raise CompileError(f"{directory}: exists and is not a bundle; refusing to replace it")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


@dataclass(frozen=True)
class BundleContent:
    name: str
    version: str
    profile: str
    format: ArtifactFormat
    precision: Precision
    interface: ModelInterface
    lineage: Lineage
    evidence: Evidence
    golden: GoldenSamples


def seal_and_pack(directory: Path, content: BundleContent, key: SigningKey) -> PackedBundle:
    """``directory`` already holds the model file and golden samples; sign it and tar it."""
    manifest = Manifest(
        name=content.name,
        version=content.version,
        profile=content.profile,
        format=content.format.value,
        precision=content.precision.value,
        model_file=MODEL_FILE[content.format],
        interface=content.interface,
        lineage=content.lineage,
        evidence=content.evidence,
        golden=content.golden,
    )
    sealed = seal_bundle(directory, manifest, key)
    tar = pack_bundle(directory, directory.with_name(directory.name + ".tar"))
    return PackedBundle(directory=directory, tar=tar, manifest=sealed)
