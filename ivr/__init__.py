"""The IVR: the call flow each citizen's call walks, its prompts and the transcription of descriptions."""
from .call_flow import HotlineCallFlow, IvrOptions, MenuChoice
from .prompts import PromptError, PromptLibrary, PromptSet, load_prompt_sets
from .transcription import TranscriptionService

__all__ = ["HotlineCallFlow", "IvrOptions", "MenuChoice", "PromptError", "PromptLibrary", "PromptSet",
           "TranscriptionService", "load_prompt_sets"]
