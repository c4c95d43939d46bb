"""The example projects (examples/testing, examples/conduit), run as their users run them."""

from __future__ import annotations

import os


def user_environment(**values: str) -> dict[str, str]:
    """This process's environment without pytest's or db's own variables, plus ``values``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith(("DB_", "PYTEST_")) and key.upper() != "DATABASE_URL"
    }
    return {**env, **values}
