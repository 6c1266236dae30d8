"""Hardware profiles: declarative deployment targets, read from YAML and checked by
:mod:`edgefleet.codec`.

>>> from hardware_profiles import load_profile
>>> load_profile("raspberry-pi/4b").preferred_precision
<Precision.INT8: 'int8'>
"""

from __future__ import annotations

from hardware_profiles.loader import (
    PROFILES_PATH_ENV,
    ProfileError,
    all_profiles,
    clear_cache,
    dump_profile,
    load_profile,
    load_profile_file,
    parse_profile,
    profile_source,
)
from hardware_profiles.schema import (
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
)

__all__ = [
    "PROFILES_PATH_ENV",
    "Accelerator",
    "ArtifactFormat",
    "Budgets",
    "Defaults",
    "Execution",
    "HardwareFacts",
    "HardwareProfile",
    "Precision",
    "ProfileError",
    "QuantScheme",
    "Quantization",
    "Runtime",
    "all_profiles",
    "clear_cache",
    "dump_profile",
    "load_profile",
    "load_profile_file",
    "parse_profile",
    "profile_source",
]
