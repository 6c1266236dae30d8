"""Bundle sealing, packing and verification: every tamper is refused, naming the file."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from edgefleet.bundle import (
    BundleError,
    Evidence,
    GoldenSamples,
    Lineage,
    Manifest,
    ModelInterface,
    SigningKey,
    TensorSpec,
    VerifyKey,
    generate_key_pair,
    load_signing_key,
    load_verify_key,
    pack_bundle,
    seal_bundle,
    unpack_bundle,
    verify_bundle,
)
from edgefleet.bundle.signing import SigningKeyError
from edgefleet.codec import decode, encode

Keys = tuple[SigningKey, VerifyKey, VerifyKey]  # signer, its public key, an untrusted key


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    folder = tmp_path_factory.mktemp("keys")
    private, public = generate_key_pair(folder, "good")
    _, other_public = generate_key_pair(folder, "other")
    return load_signing_key(private), load_verify_key(public), load_verify_key(other_public)


def make_manifest() -> Manifest:
    return Manifest(
        name="digits",
        version="1.0.0",
        profile="x86-64/avx512-vnni",
        format="onnx",
        precision="int8",
        model_file="model.onnx",
        interface=ModelInterface(
            inputs=(TensorSpec(name="x", dtype="float32", shape=("batch", 1, 8, 8)),),
            outputs=(TensorSpec(name="y", dtype="float32", shape=("batch", 10)),),
        ),
        lineage=Lineage(source_model_sha256="0" * 64, compiler_version="0.1.0"),
        evidence=Evidence(size_bytes=4096),
        golden=GoldenSamples(count=2, atol=1e-3),
    )


@pytest.fixture
def bundle(tmp_path: Path, keys: Keys) -> Path:
    folder = tmp_path / "bundle"
    folder.mkdir()
    (folder / "model.onnx").write_bytes(bytes(range(256)) * 16)
    np.savez(folder / "golden.npz", inputs=np.zeros((2, 1, 8, 8)), outputs=np.zeros((2, 10)))
    seal_bundle(folder, make_manifest(), keys[0])
    return folder


def flip_byte(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def refusal(folder: Path, key: VerifyKey) -> BundleError:
    with pytest.raises(BundleError) as caught:
        verify_bundle(folder, [key])
    return caught.value


def test_sealed_bundle_verifies_and_lists_its_checks(bundle: Path, keys: Keys) -> None:
    verified = verify_bundle(bundle, [keys[1]])
    assert verified.manifest.files.keys() == {"model.onnx", "golden.npz"}
    assert verified.key_id == keys[1].key_id
    assert any("model.onnx" in line for line in verified.checks)
    assert verified.model_path == bundle / "model.onnx"


@pytest.mark.parametrize("name", ["model.onnx", "golden.npz", "manifest.json"])
def test_a_flipped_byte_is_refused_naming_the_file(bundle: Path, keys: Keys, name: str) -> None:
    flip_byte(bundle / name)
    error = refusal(bundle, keys[1])
    assert error.file == name


def test_missing_and_extra_files_are_named(bundle: Path, keys: Keys) -> None:
    (bundle / "extra.bin").write_bytes(b"x")
    assert refusal(bundle, keys[1]).file == "extra.bin"
    (bundle / "extra.bin").unlink()
    (bundle / "golden.npz").unlink()
    error = refusal(bundle, keys[1])
    assert (error.file, error.reason) == ("golden.npz", "listed in the manifest but missing")


def test_wrong_key_is_refused_naming_the_signature(bundle: Path, keys: Keys) -> None:
    error = refusal(bundle, keys[2])
    assert error.file == "signature.json"
    assert "not trusted" in error.reason


def test_forged_signature_with_trusted_key_id_is_refused(bundle: Path, keys: Keys) -> None:
    signature = (bundle / "signature.json").read_text()
    forged = signature.replace('"signature": "', '"signature": "AAAA', 1)
    (bundle / "signature.json").write_text(forged)
    assert refusal(bundle, keys[1]).file in {"manifest.json", "signature.json"}


def test_tar_round_trip_is_deterministic_and_verifies(
    bundle: Path, tmp_path: Path, keys: Keys
) -> None:
    first = pack_bundle(bundle, tmp_path / "a.tar").read_bytes()
    second = pack_bundle(bundle, tmp_path / "b.tar").read_bytes()
    assert first == second
    unpacked = unpack_bundle(tmp_path / "a.tar", tmp_path / "unpacked")
    assert verify_bundle(unpacked, [keys[1]]).manifest.name == "digits"


@pytest.mark.parametrize("entry", ["../escape.txt", "/abs.txt"])
def test_unsafe_tar_paths_are_refused(tmp_path: Path, entry: str) -> None:
    tar_path = tmp_path / "evil.tar"
    with tarfile.open(tar_path, "w") as tar:
        info = tarfile.TarInfo(entry)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BundleError, match="unsafe path"):
        unpack_bundle(tar_path, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()


def test_a_file_that_is_not_a_tar_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bundle.tar"
    path.write_bytes(b"this is not a tar archive at all" * 40)
    with pytest.raises(BundleError, match=r"bundle\.tar: not a valid bundle tar"):
        unpack_bundle(path, tmp_path / "out")


def test_manifest_rejects_a_bad_version() -> None:
    with pytest.raises(ValueError, match="semantic version"):
        decode(Manifest, {**encode(make_manifest()), "version": "1.0"})


def test_key_files_refuse_overwrite_and_garbage(tmp_path: Path) -> None:
    generate_key_pair(tmp_path, "k")
    with pytest.raises(SigningKeyError, match="already exists"):
        generate_key_pair(tmp_path, "k")
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(SigningKeyError, match=r"junk\.pub: not a PEM public key"):
        load_verify_key(tmp_path / "junk.pub")
    with pytest.raises(SigningKeyError, match="cannot read key file"):
        load_signing_key(tmp_path / "missing.key")
    assert (tmp_path / "k.key").stat().st_mode & 0o077 == 0


def test_an_isolated_key_verifies_in_a_child_process_like_in_process(
    bundle: Path, tmp_path: Path, keys: Keys
) -> None:
    isolated = VerifyKey(keys[1].raw, isolated=True)
    assert isolated.key_id == keys[1].key_id == keys[0].key_id
    assert verify_bundle(bundle, [isolated]).key_id == keys[0].key_id
    data = b"manifest bytes"
    signature = keys[0].sign(data)
    assert isolated.verify(data, signature) and keys[1].verify(data, signature)
    assert not isolated.verify(data + b"!", signature)
    assert not isolated.verify(data, "not base64 at all!")
    forged = keys[0].sign(b"something else")
    assert not isolated.verify(data, forged) and not keys[1].verify(data, forged)


def test_public_keys_load_without_cryptography_and_other_kinds_are_refused(
    tmp_path: Path,
) -> None:
    import subprocess
    import sys

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    _, public = generate_key_pair(tmp_path, "k")
    probe = (
        "import sys; from pathlib import Path; from edgefleet.bundle import load_verify_key; "
        f"key = load_verify_key(Path({str(public)!r})); "
        "print(key.key_id, 'cryptography' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == [load_verify_key(public).key_id, "False"]
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = other.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "ec.pub").write_bytes(pem)
    with pytest.raises(SigningKeyError, match=r"ec\.pub: not an ed25519 public key"):
        load_verify_key(tmp_path / "ec.pub")
    (tmp_path / "bad.pub").write_text("-----BEGIN PUBLIC KEY-----\n!!\n-----END PUBLIC KEY-----\n")
    with pytest.raises(SigningKeyError, match=r"bad\.pub: not a PEM public key"):
        load_verify_key(tmp_path / "bad.pub")


def test_an_isolated_check_that_cannot_run_is_an_error_not_a_bad_signature(
    keys: Keys, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    isolated = VerifyKey(keys[1].raw, isolated=True)
    signature = keys[0].sign(b"data")
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(SigningKeyError, match="cannot run the signature check"):
        isolated.verify(b"data", signature)
    monkeypatch.setattr(sys, "executable", "/bin/false")  # runs, exits 1 without checking
    with pytest.raises(SigningKeyError, match="failed to run"):
        isolated.verify(b"data", signature)
