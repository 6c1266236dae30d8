"""Artifact bundles: manifest, signing, and the store functions that write and verify them."""

from edgefleet.bundle.manifest import (
    GOLDEN_FILE,
    MANIFEST_FILE,
    SIGNATURE_FILE,
    Evidence,
    GoldenSamples,
    Lineage,
    Manifest,
    ModelInterface,
    PassRecord,
    QuantParams,
    TensorSpec,
)
from edgefleet.bundle.signing import (
    SigningKey,
    SigningKeyError,
    VerifyKey,
    generate_key_pair,
    load_signing_key,
    load_verify_key,
)
from edgefleet.bundle.store import (
    BundleError,
    VerifiedBundle,
    pack_bundle,
    seal_bundle,
    sha256_file,
    unpack_bundle,
    verify_bundle,
)

__all__ = [
    "GOLDEN_FILE",
    "MANIFEST_FILE",
    "SIGNATURE_FILE",
    "BundleError",
    "Evidence",
    "GoldenSamples",
    "Lineage",
    "Manifest",
    "ModelInterface",
    "PassRecord",
    "QuantParams",
    "SigningKey",
    "SigningKeyError",
    "TensorSpec",
    "VerifiedBundle",
    "VerifyKey",
    "generate_key_pair",
    "load_signing_key",
    "load_verify_key",
    "pack_bundle",
    "seal_bundle",
    "sha256_file",
    "unpack_bundle",
    "verify_bundle",
]
