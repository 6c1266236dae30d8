"""The thin fleet server: model registry, devices, MQTT ingest, REST API.

Importing this package is cheap: FastAPI, SQLAlchemy, uvicorn and amqtt are imported by the
modules that need them, never here, because :mod:`fleet_server.cli` is loaded by every
``edgefleet`` command, on devices too.
"""
