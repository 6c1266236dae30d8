"""Cohorts: named equality label selectors, and the version their devices converge to."""
