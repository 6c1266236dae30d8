"""The cgroup memory limits the shadow memory check reads (v2, then v1); RLIMIT_AS is checked
through a real process in test_shadow_process.py."""

from __future__ import annotations

from pathlib import Path

from edge_agent.shadow import cgroup_headroom


def test_cgroup_v2_and_v1_limits_and_no_limit(tmp_path: Path) -> None:
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("536870912\n")
    (v2 / "memory.current").write_text("134217728\n")
    assert cgroup_headroom(v2) == 384 << 20
    (v2 / "memory.max").write_text("max\n")
    assert cgroup_headroom(v2) is None

    v1 = tmp_path / "v1"
    (v1 / "memory").mkdir(parents=True)
    (v1 / "memory" / "memory.limit_in_bytes").write_text("268435456\n")
    (v1 / "memory" / "memory.usage_in_bytes").write_text("300000000\n")
    assert cgroup_headroom(v1) == 0  # over the limit already: no headroom, never negative
    (v1 / "memory" / "memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert cgroup_headroom(v1) is None  # v1's "unlimited"
    assert cgroup_headroom(tmp_path / "none") is None
