"""Small models built in code, for demos and tests."""
