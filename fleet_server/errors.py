"""Domain errors of the fleet server. Each carries the HTTP status the API answers with.

An exception handler in :mod:`fleet_server.app` turns any :class:`EdgefleetError` into
``{"detail": str(exc)}`` with ``exc.http_status``; the CLI turns the same errors into one line.
"""

from __future__ import annotations

from edgefleet.errors import EdgefleetError


class FleetError(EdgefleetError):
    """Base of the fleet server's errors."""

    http_status = 400


class UnauthorizedError(FleetError):
    http_status = 401


class ForbiddenError(FleetError):
    http_status = 403


class NotFoundError(FleetError):
    http_status = 404


class ConflictError(FleetError):
    http_status = 409


class PayloadTooLargeError(FleetError):
    http_status = 413


class InvalidBundleError(FleetError):
    """A bundle failed verification; the message is the BundleError's ``<file>: <reason>``."""

    http_status = 422


class UploadsDisabledError(FleetError):
    """No trusted public key is configured, so no bundle can be verified."""

    http_status = 503


class ConfigError(FleetError):
    """The server cannot start as configured (port in use, bad URL, unreadable data dir)."""


class FleetClientError(FleetError):
    """The operator CLI got an error from, or could not reach, the fleet server."""
