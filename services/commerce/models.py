"""This service's tables. Its domain arrives with its issue; the bus tables are here from the start."""

from __future__ import annotations

from shared.app import BusTables
from shared.bus.tables import inbox_table, outbox_table
from shared.db import make_base

Base = make_base()
BUS = BusTables(outbox=outbox_table(Base.metadata), inbox=inbox_table(Base.metadata))
