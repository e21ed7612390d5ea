"""Fixtures shared with the CLI tests: real daemons on 127.0.0.1."""

from tests.cli.conftest import daemon as daemon
