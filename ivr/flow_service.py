"""FlowServices: the flow store, validator, speech models, admin service and live source, built together."""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from .flow_admin import FlowAdmin
from .flow_model import FlowDocument
from .flow_prompts import FlowPrompts
from .flow_source import FileFlowSource, LiveFlowSource
from .flow_store import FlowStore
from .flow_validator import FlowValidator
from .speech import SpeechModels


@dataclass(frozen=True)
class FlowServices:
    """Everything flows need in one process; the composition root builds it with create()."""

    store: FlowStore
    validator: FlowValidator
    models: SpeechModels
    admin: FlowAdmin
    live: LiveFlowSource

    @classmethod
    def create(cls, engine: AsyncEngine, *, flow_file: Path, prompts_dir: Path, override_dir: Path | None,
               queues: Collection[str] | None, project_dir: Path, recognizer: Any = None,
               live_name: str = "default") -> "FlowServices":
        """Wire the pieces; "file:" prompts and model paths are relative to the flow file's folder / project."""
        store = FlowStore(engine)
        models = SpeechModels(recognizer, project_dir)
        base_dir = flow_file.resolve().parent
        validator = FlowValidator(vocabulary_for=models.vocabulary, queues=queues, base_dir=base_dir,
                                  override_dir=override_dir)

        def prompts_for(document: FlowDocument) -> FlowPrompts:
            return FlowPrompts(document, prompts_dir, override_dir, base_dir)

        shipped = FileFlowSource(flow_file, validator, prompts_for)
        live = LiveFlowSource(store, live_name, shipped, validator, prompts_for)
        admin = FlowAdmin(store, validator, prompts_for, flow_file, live_name=live_name)
        return cls(store, validator, models, admin, live)
