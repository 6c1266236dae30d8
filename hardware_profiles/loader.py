"""Find, read and check hardware profiles.

Built-in profiles are the YAML files in ``hardware_profiles/profiles/``. More may come from the
directories (or single files) named in ``EDGEFLEET_PROFILES_PATH``, separated by ``os.pathsep``.
A tag is an identity: defining one twice, in any two files, is an error that names both.

Every problem is a :class:`ProfileError` whose message names the file, the field and the reason::

    my-board.yaml: field execution.providers: Input should be a valid tuple

Adding a profile: copy the closest YAML in ``hardware_profiles/profiles/``, change the tag
(``family/model``, lower case) and the facts, and check it with ``edgefleet profiles validate``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable, Iterator
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

import yaml

from edgefleet.codec import DecodeError, decode, encode
from edgefleet.errors import EdgefleetError
from hardware_profiles.schema import HardwareProfile

PROFILES_PATH_ENV = "EDGEFLEET_PROFILES_PATH"
PROFILE_SUFFIXES = (".yaml", ".yml")


class ProfileError(EdgefleetError):
    """A profile is unknown, or a profile file is unreadable or invalid."""

    http_status = 422


def parse_profile(text: str, source: str) -> HardwareProfile:
    """Parse and validate one profile from YAML text; ``source`` names it in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = exc.problem or exc.context or "cannot be parsed"
        raise ProfileError(f"{source}:{where}: invalid YAML: {reason}") from exc
    except yaml.YAMLError as exc:
        raise ProfileError(f"{source}: invalid YAML: {exc}") from exc
    if data is None:
        raise ProfileError(f"{source}: the file is empty, expected a profile mapping")
    if not isinstance(data, dict):
        raise ProfileError(
            f"{source}: expected a mapping of profile fields, got {type(data).__name__}"
        )
    try:
        return decode(HardwareProfile, data)
    except DecodeError as exc:  # every problem, on one line: "field a.b: reason; field c: ..."
        raise ProfileError(f"{source}: {exc}") from exc


def _read(path: Path | Traversable, source: str) -> HardwareProfile:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{source}: cannot read the profile: {exc}") from exc
    return parse_profile(text, source)


def load_profile_file(path: str | os.PathLike[str]) -> HardwareProfile:
    """Read and validate one profile file (any name, any place)."""
    file = Path(path)
    if not file.is_file():
        raise ProfileError(f"{file}: no such profile file")
    return _read(file, str(file))


class _ProfileDumper(yaml.SafeDumper):
    """Long text as folded blocks and multi-line text as literal blocks, for readability."""


# Line breaks other than "\n" do not survive block or single-quoted scalars: quote them.
_ESCAPED_BREAKS = frozenset("\r\x85\u2028\u2029")


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style: str | None = None
    if _ESCAPED_BREAKS.intersection(value):
        style = '"'
    elif "\n" in value:
        style = "|"
    elif len(value) > 80:
        style = ">"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_ProfileDumper.add_representer(str, _represent_str)


def dump_profile(profile: HardwareProfile) -> str:
    """The profile as YAML that :func:`parse_profile` reads back to an equal profile."""
    data = encode(profile, exclude_none=True)
    return yaml.dump(data, Dumper=_ProfileDumper, sort_keys=False, allow_unicode=True, width=88)


def _builtin_files() -> Iterator[Traversable]:
    folder = resources.files("hardware_profiles") / "profiles"
    entries = sorted(folder.iterdir(), key=lambda entry: entry.name)
    yield from (e for e in entries if e.is_file() and e.name.endswith(PROFILE_SUFFIXES))


@functools.cache
def _builtin_profiles() -> tuple[tuple[HardwareProfile, str], ...]:
    found = []
    for entry in _builtin_files():
        source = (
            str(entry) if isinstance(entry, Path) else f"hardware_profiles/profiles/{entry.name}"
        )
        found.append((_read(entry, source), source))
    return tuple(found)


def _extra_files(value: str) -> Iterator[Path]:
    for raw in value.split(os.pathsep):
        if not raw.strip():
            continue
        place = Path(raw).expanduser()
        if place.is_dir():
            yield from sorted(p for p in place.iterdir() if p.suffix in PROFILE_SUFFIXES)
        elif place.is_file():
            yield place
        else:
            raise ProfileError(f"{PROFILES_PATH_ENV}: {place}: no such file or directory")


def _registry(extra: str | None) -> dict[str, tuple[HardwareProfile, str]]:
    """Tag -> (profile, source file), built-ins first; a tag defined twice is refused."""
    entries: list[tuple[HardwareProfile, str]] = list(_builtin_profiles())
    if extra:
        entries += [(_read(path, str(path)), str(path)) for path in _extra_files(extra)]
    by_tag: dict[str, tuple[HardwareProfile, str]] = {}
    for profile, source in entries:
        if profile.tag in by_tag:
            first = by_tag[profile.tag][1]
            raise ProfileError(
                f"{source}: field tag: profile {profile.tag!r} is already defined in {first}; "
                "a tag may be defined only once"
            )
        by_tag[profile.tag] = (profile, source)
    return by_tag


def all_profiles() -> list[HardwareProfile]:
    """Every known profile (built-in and from ``EDGEFLEET_PROFILES_PATH``), sorted by tag."""
    registry = _registry(os.environ.get(PROFILES_PATH_ENV))
    return [registry[tag][0] for tag in sorted(registry)]


def profile_source(tag: str) -> str:
    """The file a known profile was read from."""
    registry = _registry(os.environ.get(PROFILES_PATH_ENV))
    if tag not in registry:
        raise _unknown(tag, registry)
    return registry[tag][1]


def _unknown(tag: str, known: Iterable[str]) -> ProfileError:
    names = ", ".join(sorted(known))
    return ProfileError(f"unknown hardware profile {tag!r}; known profiles: {names}")


def load_profile(tag: str) -> HardwareProfile:
    """The profile with this tag; :class:`ProfileError` naming the known tags if none."""
    registry = _registry(os.environ.get(PROFILES_PATH_ENV))
    if tag not in registry:
        raise _unknown(tag, registry)
    return registry[tag][0]


def clear_cache() -> None:
    """Forget the built-in profiles read so far (for tests that edit them)."""
    _builtin_profiles.cache_clear()
