"""Subcommands of the ``rag-cache`` command."""
