"""The IVR: admin-configured call flows (model, validator, versions, engine) and prompts."""
from .call_flow import HotlineCallFlow, IvrOptions
from .flow_model import NODE_KINDS, FlowDocument, parse_flow
from .flow_prompts import FixedPrompts, FlowPrompts
from .flow_source import FileFlowSource, FlowRejected, LiveFlowSource, LoadedFlow, compile_flow
from .flow_validator import FlowIssue, FlowReport, FlowValidator
from .prompts import PromptError, PromptLibrary, PromptSet, load_prompt_sets

__all__ = ["NODE_KINDS", "FileFlowSource", "FixedPrompts", "FlowDocument", "FlowIssue", "FlowPrompts",
           "FlowRejected", "FlowReport", "FlowValidator", "HotlineCallFlow", "IvrOptions", "LiveFlowSource",
           "LoadedFlow", "PromptError", "PromptLibrary", "PromptSet", "compile_flow",
           "load_prompt_sets", "parse_flow"]
