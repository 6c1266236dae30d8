"""``GET /metrics``: the agent's counters in the Prometheus text exposition format (0.0.4).

Everything is cumulative since the agent started (counters never reset, unlike the
telemetry windows), so a scraper can compute rates itself::

    edgefleet_agent_requests_total            model runs for predict requests (a micro-batch
                                              of concurrent requests is one)
    edgefleet_agent_examples_total            examples predicted (a batch request counts each)
    edgefleet_agent_errors_total              failed requests (4xx/5xx but 503)
    edgefleet_agent_request_latency_seconds   histogram of model-run latency per request
    edgefleet_agent_outbox_depth              records waiting for an acknowledgement
    edgefleet_agent_outbox_bytes              their payload bytes
    edgefleet_agent_outbox_committed_total    records committed
    edgefleet_agent_outbox_dropped_total      records dropped, by reason (oldest, rejected)
    edgefleet_agent_model_info                1, labelled with the active model (absent if none)
    edgefleet_agent_shadow_*                  shadow agreement, when a shadow runs
"""

from __future__ import annotations

from collections.abc import Mapping

from edge_agent.outbox import OutboxStats
from edge_agent.serving import ServedModel
from edge_agent.telemetry import LATENCY_BOUNDS_MS, Totals
from edgefleet.protocol.messages import ShadowStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
PREFIX = "edgefleet_agent_"


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{escape_label(value)}"' for key, value in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {PREFIX}{name} {help_text}")
        self.lines.append(f"# TYPE {PREFIX}{name} {kind}")

    def sample(self, name: str, value: float, labels: Mapping[str, str] | None = None) -> None:
        self.lines.append(f"{PREFIX}{name}{_labels(labels or {})} {_number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(
    *,
    totals: Totals,
    outbox_depth: int,
    outbox_bytes: int,
    outbox: OutboxStats,
    model: ServedModel | None,
    shadow: ShadowStats | None,
) -> str:
    out = _Writer()
    out.family(
        "requests_total", "counter", "Model runs for predict requests (a micro-batch is one)."
    )
    out.sample("requests_total", totals.calls)
    out.family("examples_total", "counter", "Examples predicted (each example of a batch).")
    out.sample("examples_total", totals.examples)
    out.family("errors_total", "counter", "Requests answered with an error (503 excluded).")
    out.sample("errors_total", totals.errors)

    name = "request_latency_seconds"
    out.family(name, "histogram", "Model-run latency per predict request.")
    cumulative = 0
    for bound, count in zip(LATENCY_BOUNDS_MS, totals.histogram, strict=False):
        cumulative += count
        out.sample(f"{name}_bucket", cumulative, {"le": _number(bound / 1000.0)})
    out.sample(f"{name}_bucket", totals.calls, {"le": "+Inf"})
    out.sample(f"{name}_sum", totals.latency_ms_sum / 1000.0)
    out.sample(f"{name}_count", totals.calls)

    out.family("outbox_depth", "gauge", "Prediction records waiting for acknowledgement.")
    out.sample("outbox_depth", outbox_depth)
    out.family("outbox_bytes", "gauge", "Payload bytes of the records in the outbox.")
    out.sample("outbox_bytes", outbox_bytes)
    out.family("outbox_committed_total", "counter", "Prediction records committed.")
    out.sample("outbox_committed_total", outbox.committed)
    out.family("outbox_dropped_total", "counter", "Prediction records dropped by the policy.")
    out.sample("outbox_dropped_total", outbox.dropped_oldest, {"reason": "oldest"})
    out.sample("outbox_dropped_total", outbox.rejected_new, {"reason": "rejected"})

    out.family("model_active", "gauge", "1 while a model is being served, else 0.")
    out.sample("model_active", 1 if model is not None else 0)
    if model is not None:
        out.family("model_info", "gauge", "The active model (always 1).")
        out.sample(
            "model_info",
            1,
            {
                "model": model.name,
                "version": model.version,
                "precision": model.manifest.precision,
                "provider": model.provider,
                "artifact_sha256": model.artifact_sha256,
            },
        )
    if shadow is not None:
        labels = {"model": shadow.model, "version": shadow.version}
        out.family("shadow_compared_total", "counter", "Examples mirrored to the shadow model.")
        out.sample("shadow_compared_total", shadow.compared, labels)
        out.family("shadow_errors_total", "counter", "Shadow model runs that failed.")
        out.sample("shadow_errors_total", shadow.errors, labels)
        if shadow.top1_agreement is not None:
            out.family("shadow_top1_agreement", "gauge", "Share of equal top-1 outputs.")
            out.sample("shadow_top1_agreement", shadow.top1_agreement, labels)
        if shadow.mean_abs_diff is not None:
            out.family("shadow_mean_abs_diff", "gauge", "Mean absolute output difference.")
            out.sample("shadow_mean_abs_diff", shadow.mean_abs_diff, labels)
    return out.text()
