"""Fixtures shared by the integration tests."""

from tests.integration.gateway_fixtures import apps_file, gateway  # noqa: F401 - pytest fixtures
