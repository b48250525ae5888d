"""Fixtures for the whole suite: real Redis servers (``redis_url``, ``cluster_url``,
``redis_server``, ``redis_cluster``) come from :mod:`tests.support.servers`; the
``figures`` fixture (measured figures in the terminal summary) from
:mod:`tests.support.figures`."""

pytest_plugins = ["pytester", "tests.support.servers", "tests.support.figures"]
