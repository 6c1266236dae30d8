"""Devices: enrolment (profile, labels, token), desired state and the state they report."""
