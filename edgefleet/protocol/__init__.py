"""The MQTT protocol between agents and the fleet server: topics and typed payloads."""
