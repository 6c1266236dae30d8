"""Property: any valid profile survives profile -> YAML -> profile (and -> JSON -> profile)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from edgefleet.codec import from_json, to_json
from hardware_profiles import (
    Accelerator,
    ArtifactFormat,
    Budgets,
    Defaults,
    Execution,
    HardwareFacts,
    HardwareProfile,
    Precision,
    Quantization,
    QuantScheme,
    Runtime,
    all_profiles,
    dump_profile,
    parse_profile,
)
from hardware_profiles.schema import TAG_PATTERN

# Any text YAML can carry: no surrogates (not encodable) and none of the characters YAML 1.1
# forbids in a stream. Line breaks, tabs, quotes, '#', ': ' and non-ASCII all stay in.
_text = st.text(
    st.characters(
        exclude_categories=["Cs"],
        exclude_characters="\ufeff\ufffe\uffff",
    ),
    max_size=120,
)
_names = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("\n\t\u00e9\u2028"),
    max_size=40,
)
_short_tuples = st.lists(_names, max_size=4).map(tuple)
_size = st.none() | st.integers(min_value=1, max_value=2**53)

hardware = st.builds(
    HardwareFacts,
    cores=st.integers(min_value=1, max_value=4096),
    memory_mb=_size,
    cpu=_names,
    cpu_features=_short_tuples,
    accelerator_name=st.none() | _names,
    ram_kb=_size,
    flash_kb=_size,
)
execution = st.builds(
    Execution, providers=_short_tuples, delegates=_short_tuples, allow_cpu_fallback=st.booleans()
)
quantization = st.builds(
    Quantization,
    scheme=st.sampled_from(QuantScheme),
    per_channel=st.booleans(),
    activations=st.sampled_from(["int8", "uint8"]),
    weights=st.sampled_from(["int8", "uint8"]),
    int8_io=st.booleans(),
)
profiles = st.builds(
    HardwareProfile,
    tag=st.from_regex(TAG_PATTERN, fullmatch=True),
    name=_text,
    description=_text,
    arch=_names,
    accelerator=st.sampled_from(Accelerator),
    runtime=st.sampled_from(Runtime),
    format=st.sampled_from(ArtifactFormat),
    hardware=hardware,
    execution=execution,
    precisions=st.lists(st.sampled_from(Precision), min_size=1, max_size=3, unique=True).map(tuple),
    quantization=quantization,
    budgets=st.builds(Budgets, max_model_bytes=_size, max_arena_bytes=_size),
    defaults=st.builds(
        Defaults,
        threads=st.integers(min_value=1, max_value=256),
        batch_size=st.integers(min_value=1, max_value=4096),
    ),
)


@settings(max_examples=200, deadline=None)
@given(profiles)
def test_profile_yaml_profile_round_trip(profile: HardwareProfile) -> None:
    text = dump_profile(profile)
    again = parse_profile(text, "generated.yaml")
    assert again == profile
    assert dump_profile(again) == text


@settings(max_examples=100, deadline=None)
@given(profiles)
def test_profile_json_profile_round_trip(profile: HardwareProfile) -> None:
    assert from_json(HardwareProfile, to_json(profile)) == profile


def test_builtin_profiles_round_trip() -> None:
    for profile in all_profiles():
        assert parse_profile(dump_profile(profile), profile.tag) == profile
