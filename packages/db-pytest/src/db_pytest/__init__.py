"""db_pytest: the pytest plugin of db-core (installed with ``pip install "db-core[pytest]"``).

pytest loads :mod:`db_pytest.plugin` by itself once this distribution is
installed; there is nothing to import. ``pytest --fixtures`` lists what it
gives: ``db_settings``, ``db_setup``, ``db_engine``, ``db_session`` and
``db_app``.
"""

from db_pytest.__about__ import __version__

__all__ = ["__version__"]
