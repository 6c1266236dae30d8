"""Rollouts: a model version to a cohort, in waves gated on how the model behaves on devices.

- :mod:`.machine`: the three state machines (rollout, wave, device deployment), one table each;
- :mod:`.strategy`: typed strategies (all-at-once, canary, shadow-then-promote) and gates;
- :mod:`.metrics`: what a wave measured (install, errors, latency, shadow agreement, drift);
- :mod:`.executor`: the periodic, idempotent tick that advances every rollout;
- :mod:`.service` / :mod:`.router`: the operator's API.
"""
