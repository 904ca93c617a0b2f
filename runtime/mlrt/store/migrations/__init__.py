"""Alembic migrations for the metadata store.

``HEAD_REVISION`` lets a process skip importing alembic when the schema is
already current; a test checks it matches the newest script in ``versions/``.
Add a migration with ``alembic revision`` against ``mlrt.store.models`` and
update ``HEAD_REVISION``.
"""

HEAD_REVISION = "0012"
