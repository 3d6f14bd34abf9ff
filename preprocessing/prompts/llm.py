"""LLM caption -> short motion prompt over an OpenAI-compatible /v1/chat/completions endpoint.

The paper's recipe: a system prompt plus in-context JSON examples of
caption -> {"objects": [...], "motion": "..."}; several captions per request. Answers are cached
on disk keyed by (model, caption) so a re-run never asks twice. Timeouts are retried; a reply
that is not the JSON asked for falls back to the built-in rules, with the reason recorded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any
from collections.abc import Sequence

import requests

from preprocessing.prompts.builtin import extract_motion

SYSTEM_PROMPT = (
    "You annotate video captions for training an image-animation model. For each caption, list "
    "the objects it mentions and write the SHORT motion phrase (1-3 words, e.g. 'smile', 'blink', "
    "'sway', 'turn the head', 'slide left') describing the main movement. If the caption "
    "describes no movement, use an empty string for motion. Reply with ONLY a JSON array with one "
    'object {"objects": [...], "motion": "..."} per caption, in the same order.'
)


@dataclass
class PromptResult:
    motion: str | None
    source: str  # "llm", "cache", "builtin", "builtin_fallback"
    note: str = ""


def load_examples() -> list[dict[str, Any]]:
    text = resources.files("preprocessing.prompts").joinpath("llm_examples.json").read_text()
    return json.loads(text)


def build_messages(captions: Sequence[str], examples: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """System prompt, then the examples as one user/assistant exchange, then the batch."""
    ex_in = [e["caption"] for e in examples]
    ex_out = [{"objects": e["objects"], "motion": e["motion"]} for e in examples]
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": json.dumps(ex_in)},
        {"role": "assistant", "content": json.dumps(ex_out)},
        {"role": "user", "content": json.dumps(list(captions))},
    ]


def parse_reply(content: str, count: int) -> list[str | None]:
    """Motion phrases from the model's reply; ValueError if it is not the JSON asked for."""
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", content.strip())
    data = json.loads(text)
    if isinstance(data, dict) and count == 1:
        data = [data]
    if not isinstance(data, list) or len(data) != count:
        raise ValueError(f"expected a JSON array of {count} objects")
    motions: list[str | None] = []
    for item in data:
        if not isinstance(item, dict) or not isinstance(item.get("motion", None), str):
            raise ValueError("an item lacks a string 'motion'")
        phrase = " ".join(item["motion"].strip().lower().split())
        motions.append(phrase if phrase and phrase not in ("none", "n/a", "no motion") else None)
    return motions


class PromptCache:
    """Append-only JSONL file of {key, model, caption, motion}; key = sha1(model, caption)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._data: dict[str, str | None] = {}
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                    self._data[entry["key"]] = entry["motion"]
                except (ValueError, KeyError):
                    continue  # a line cut by a kill: ignore it

    @staticmethod
    def key(model: str, caption: str) -> str:
        return hashlib.sha1(f"{model}\0{caption}".encode()).hexdigest()

    def get(self, model: str, caption: str) -> tuple[bool, str | None]:
        k = self.key(model, caption)
        return (k in self._data, self._data.get(k))

    def put(self, model: str, caption: str, motion: str | None) -> None:
        k = self.key(model, caption)
        with self._lock:
            self._data[k] = motion
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"key": k, "model": model, "caption": caption, "motion": motion}) + "\n")


class LLMPromptExtractor:
    def __init__(self, url: str, model: str, api_key_env: str = "OPENAI_API_KEY", batch_size: int = 8,
                 timeout_s: float = 60.0, retries: int = 2, cache: str | Path | None = None) -> None:
        self.url, self.model, self.batch_size = url, model, int(batch_size)
        self.timeout_s, self.retries = float(timeout_s), int(retries)
        self.api_key = os.environ.get(api_key_env, "") if api_key_env else ""
        self.cache = PromptCache(cache) if cache else None
        self.examples = load_examples()
        self.requests_sent = 0

    def _ask(self, captions: Sequence[str]) -> list[str | None]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        body = {"model": self.model, "messages": build_messages(captions, self.examples), "temperature": 0}
        last_error = ""
        for attempt in range(self.retries + 1):
            try:
                self.requests_sent += 1
                resp = requests.post(self.url, json=body, headers=headers, timeout=self.timeout_s)
                if resp.status_code >= 500 or resp.status_code == 429:
                    raise requests.HTTPError(f"HTTP {resp.status_code}")
                resp.raise_for_status()
                content = resp.json()["choices"][0]["message"]["content"]
            except (requests.RequestException, ValueError, KeyError, IndexError, TypeError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"[:200]
                if attempt < self.retries:
                    time.sleep(min(2.0 ** attempt * 0.5, 8.0))
                continue
            return parse_reply(content, len(captions))  # malformed JSON: not retried, falls back
        raise ConnectionError(last_error)

    def extract_many(self, captions: Sequence[str]) -> list[PromptResult]:
        results: list[PromptResult | None] = [None] * len(captions)
        todo: list[int] = []
        for i, caption in enumerate(captions):
            hit, motion = self.cache.get(self.model, caption) if self.cache else (False, None)
            if hit:
                results[i] = PromptResult(motion, "cache")
            else:
                todo.append(i)
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            texts = [captions[i] for i in batch]
            try:
                motions = self._ask(texts)
            except ValueError as exc:
                note = f"llm_fallback: malformed reply ({exc})"[:200]
                for i in batch:
                    results[i] = PromptResult(extract_motion(captions[i]), "builtin_fallback", note)
                continue
            except ConnectionError as exc:
                note = f"llm_fallback: endpoint failed after {self.retries + 1} tries ({exc})"[:200]
                for i in batch:
                    results[i] = PromptResult(extract_motion(captions[i]), "builtin_fallback", note)
                continue
            for i, motion in zip(batch, motions):
                results[i] = PromptResult(motion, "llm")
                if self.cache:
                    self.cache.put(self.model, captions[i], motion)
        return [r for r in results if r is not None]
