"""The on-device agent: serve the active model locally, log every prediction durably, deliver
the log to the fleet server with end-to-end acks, report telemetry, and apply updates.

Imports only the standard library, numpy, onnxruntime, paho-mqtt, psutil, typer, the
Edgefleet core and hardware profiles: a device installs ``edgefleet[agent]`` and nothing more.
"""
