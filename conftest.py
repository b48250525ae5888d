"""Fixtures for the whole suite: real Redis servers (``redis_url``, ``cluster_url``,
``redis_server``, ``redis_cluster``) come from :mod:`tests.support.servers`."""

pytest_plugins = ["pytester", "tests.support.servers"]
