"""Edgefleet shared core: CLI root, artifact bundle format and signing, MQTT protocol, settings."""

__version__ = "0.1.0"
