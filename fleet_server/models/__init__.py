"""Registry of model versions and their per-profile artifacts (signed bundle tars)."""
