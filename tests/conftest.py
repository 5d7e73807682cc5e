"""Fixtures every test module may ask for by name."""
from tests.support.asterisk_fixture import agi_stub, asterisk, asterisk_config  # noqa: F401  (pytest fixtures)
