"""Fixtures of the rollout scenarios (see :mod:`tests.e2e.rollout_fleet`): ``bundles``, a
module-scoped ``server`` and a fresh four-agent ``fleet`` per test. A module may define its
own fixture of the same name (the walking skeleton has its own ``fleet``)."""

from tests.e2e.rollout_fleet import bundles, fleet, server

__all__ = ["bundles", "fleet", "server"]
