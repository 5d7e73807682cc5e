"""Every domain's table module, so tools that compare the models with the migrations see all of them."""
from __future__ import annotations

# storage imports no domain; the composition root names them. A new domain's tables module is added here.
TABLE_MODULES: tuple[str, ...] = (
    "cases.tables",
    "identity.accounts",
    "queueing.records",
    "queueing.queue_tables",
    "ivr.flow_store",
    "transcripts.tables",
)
