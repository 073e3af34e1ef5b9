"""Every ORM table, one module per domain. Importing this package registers them all on Base."""

from yuntu.kit.db import Base
from yuntu.models import (  # noqa: F401
    audit,
    drive,
    idempotency,
    identity,
    jobs,
    ledger,
    packages,
    render,
    uploads,
)

metadata = Base.metadata
