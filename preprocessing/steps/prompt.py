"""PromptStep: short motion prompt from the caption (built-in rules or an LLM, see prompts/).

Runs batched over many rows at once (one LLM request covers several captions), before decoding
in the pipeline, so a caption without motion is filtered without decoding its video.
"""

from __future__ import annotations

from preprocessing.prompts import PromptExtractor
from preprocessing.steps.base import Sample, Step, is_ok, mark, timed


class PromptStep(Step):
    name = "prompt"

    def __init__(self, extractor: PromptExtractor, require_motion: bool = True) -> None:
        self.extractor = extractor
        self.require_motion = require_motion

    def process(self, sample: Sample) -> Sample:
        return self.process_batch([sample])[0]

    def process_batch(self, samples: list[Sample]) -> list[Sample]:
        todo = [s for s in samples if is_ok(s)]
        if not todo:
            return samples
        with timed(todo[0], self.name):  # the batch's time, booked once
            results = self.extractor.extract_many([s["caption"] for s in todo])
        for sample, result in zip(todo, results):
            sample["motion_prompt"] = result.motion or ""
            sample["prompt_source"] = result.source
            if result.note:
                sample["prompt_note"] = result.note
            if result.motion is None and self.require_motion:
                mark(sample, "filtered", "no_motion_in_caption: no motion verb found"
                     + (f" ({result.note})" if result.note else ""))
        return samples
