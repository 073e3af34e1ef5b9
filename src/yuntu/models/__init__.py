"""Every ORM table, one module per domain. Importing this package registers them all on Base."""

from yuntu.kit.db import Base
from yuntu.models import audit, drive, idempotency, identity, jobs, ledger, uploads  # noqa: F401

metadata = Base.metadata
