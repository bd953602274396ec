"""Scoring new reviews with a run's model bundle: in process, from files, as a service."""
