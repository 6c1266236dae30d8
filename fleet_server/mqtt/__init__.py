"""MQTT side of the server: the ingest bridge (paho), the publisher, the embedded broker."""
