"""FlowServices: the flow store, validator, speech models, admin service, live source and number router, built
together."""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from asr import SpeechRecognizer

from .flow_admin import FlowAdmin
from .flow_model import FlowDocument
from .flow_prompts import FlowPrompts
from .flow_routes import FlowRouter, flow_file_for
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
    live: LiveFlowSource  # the default flow
    router: FlowRouter  # each call's flow by the number it dialed

    @classmethod
    def create(cls, engine: AsyncEngine, *, flow_file: Path, prompts_dir: Path, override_dir: Path | None,
               queues: Collection[str] | None, project_dir: Path, recognizer: SpeechRecognizer | None = None,
               live_name: str = "default", hotline_number: str = "12345",
               numbers: Mapping[str, str] | None = None) -> FlowServices:
        """Wire the pieces; "file:" prompts and model paths are relative to the flow file's folder / project.

        numbers: dialed number → flow name (settings ivr_numbers; the hotline number runs live_name unless
        mapped); "{hotline_number}" in prompt texts is spoken as hotline_number."""
        store = FlowStore(engine)
        models = SpeechModels(recognizer, project_dir)
        base_dir = flow_file.resolve().parent
        validator = FlowValidator(vocabulary_for=models.vocabulary, queues=queues, base_dir=base_dir,
                                  override_dir=override_dir)

        def prompts_for(document: FlowDocument) -> FlowPrompts:
            return FlowPrompts(document, prompts_dir, override_dir, base_dir, hotline_number=hotline_number)

        shipped = FileFlowSource(flow_file, validator, prompts_for)
        live = LiveFlowSource(store, live_name, shipped, validator, prompts_for)

        def source_for(name: str) -> LiveFlowSource:
            if name == live_name:
                return live
            path = flow_file_for(name, flow_file, live_name)
            return LiveFlowSource(store, name, FileFlowSource(path, validator, prompts_for) if path else None,
                                  validator, prompts_for)

        router = FlowRouter(numbers or {}, hotline_number, source_for, store, default_name=live_name)
        admin = FlowAdmin(store, validator, prompts_for, flow_file, live_name=live_name, numbers=router.numbers)
        return cls(store, validator, models, admin, live, router)
