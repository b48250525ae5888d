"""Helpers shared by the test suite (fixtures live in :mod:`tests.support.servers`)."""
