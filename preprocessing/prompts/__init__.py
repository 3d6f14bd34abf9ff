"""Short motion prompts from captions: built-in rules or an LLM endpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol
from collections.abc import Sequence

from preprocessing.prompts.builtin import extract_motion
from preprocessing.prompts.llm import LLMPromptExtractor, PromptResult


class PromptExtractor(Protocol):
    def extract_many(self, captions: Sequence[str]) -> list[PromptResult]: ...


class BuiltinPromptExtractor:
    def extract_many(self, captions: Sequence[str]) -> list[PromptResult]:
        return [PromptResult(extract_motion(c), "builtin") for c in captions]


def make_extractor(prompt_cfg: Any, output_dir: str | Path) -> PromptExtractor:
    """Extractor named by `prompt.extractor`; the LLM cache defaults to <output.dir>/prompt_cache.jsonl."""
    if prompt_cfg.extractor == "builtin":
        return BuiltinPromptExtractor()
    llm = prompt_cfg.llm
    cache = llm.cache or str(Path(output_dir) / "prompt_cache.jsonl")
    return LLMPromptExtractor(llm.url, llm.model, llm.api_key_env, llm.batch_size, llm.timeout_s, llm.retries, cache)


__all__ = ["BuiltinPromptExtractor", "LLMPromptExtractor", "PromptResult", "extract_motion", "make_extractor"]
