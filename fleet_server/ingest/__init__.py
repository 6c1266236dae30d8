"""Ingest of what devices publish over MQTT: status, reports, telemetry, predictions."""
