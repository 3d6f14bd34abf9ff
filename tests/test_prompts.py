"""Short motion prompts: built-in rules and the LLM extractor against a fake loopback server."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from preprocessing.prompts import BuiltinPromptExtractor, make_extractor
from preprocessing.prompts.builtin import extract_motion
from preprocessing.prompts.llm import LLMPromptExtractor, build_messages, load_examples, parse_reply
from preprocessing.steps.prompt import PromptStep


@pytest.mark.parametrize("caption, expected", [
    ("A red disc slides to the left past a blue block", "slide left"),
    ("a woman smiles at the camera", "smile"),
    ("leaves sway in the wind", "sway"),
    ("man walking", "walk"),
    ("The dog ran down the hill", "run down"),
    ("Close up of a girl blinking", "blink"),
    ("a yellow square moves up on a textured background", "move up"),
    ("Aerial view of a river, camera pans right", "pan right"),
    ("Woman sits down on a bench", "sit down"),
    ("Flags flying in the wind", "fly"),
    ("Cars driving on a highway at night", "drive"),
])
def test_builtin_extracts_verb_and_direction(caption, expected):
    assert extract_motion(caption) == expected


@pytest.mark.parametrize("caption", [
    "a still photo of a vase", "Portrait of an old man on a black background",
    "beautiful landscape with mountains", "a woman standing in a field", "a walk in the park", "",
])
def test_builtin_returns_none_without_motion(caption):
    assert extract_motion(caption) is None


def test_builtin_is_deterministic_and_covers_llm_examples():
    examples = load_examples()
    assert 10 <= len(examples) <= 50
    for ex in examples:  # the in-context examples that name motion are recognised as motion by the rules too
        assert (extract_motion(ex["caption"]) is not None) == bool(ex["motion"]), ex["caption"]
    assert [extract_motion(e["caption"]) for e in examples] == [extract_motion(e["caption"]) for e in examples]


def test_prompt_step_filters_captions_without_motion():
    samples = [{"caption": "a cat jumps up", "status": "ok"}, {"caption": "a still vase", "status": "ok"},
               {"caption": "a dog runs", "status": "error", "reason": "missing_file: x"}]
    out = PromptStep(BuiltinPromptExtractor(), require_motion=True).process_batch(samples)
    assert out[0]["motion_prompt"] == "jump up" and out[0]["status"] == "ok"
    assert out[1]["status"] == "filtered" and out[1]["reason"].startswith("no_motion_in_caption")
    assert out[2]["reason"] == "missing_file: x" and "motion_prompt" not in out[2]
    kept = PromptStep(BuiltinPromptExtractor(), require_motion=False).process_batch([{"caption": "a still vase"}])
    assert kept[0].get("status", "ok") == "ok" and kept[0]["motion_prompt"] == ""


class _FakeLLM(BaseHTTPRequestHandler):
    """OpenAI-compatible endpoint: answers from the user message; behaviour set by the caption text."""

    calls: list[list[str]] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        captions = json.loads(body["messages"][-1]["content"])
        type(self).calls.append(captions)
        if any("SLOW" in c for c in captions):
            time.sleep(1.5)
        if any("BROKEN" in c for c in captions):
            content = "Sure! Here are the motions: smile, wave"
        else:
            answer = [{"objects": ["thing"], "motion": "" if "still" in c else f"llm {c.split()[-1]}"} for c in captions]
            content = "```json\n" + json.dumps(answer) + "\n```"
        reply = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        try:
            self.wfile.write(reply)
        except BrokenPipeError:  # the client timed out first (the timeout test)
            pass


@pytest.fixture
def fake_llm():
    _FakeLLM.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1/chat/completions"
    server.shutdown()
    server.server_close()


def test_llm_batches_caches_and_sends_in_context_examples(fake_llm, tmp_path):
    cache = tmp_path / "cache.jsonl"
    captions = ["a dog runs", "a cat jumps", "a still vase", "a bird flies", "a man waves"]
    llm = LLMPromptExtractor(fake_llm, "fake-model", batch_size=2, timeout_s=5, retries=0, cache=cache)
    results = llm.extract_many(captions)
    assert [r.motion for r in results] == ["llm runs", "llm jumps", None, "llm flies", "llm waves"]
    assert all(r.source == "llm" for r in results)
    assert [len(c) for c in _FakeLLM.calls] == [2, 2, 1]  # batched, in order
    again = LLMPromptExtractor(fake_llm, "fake-model", batch_size=2, timeout_s=5, retries=0, cache=cache)
    assert [r.motion for r in again.extract_many(captions)] == [r.motion for r in results]
    assert again.requests_sent == 0  # served from the on-disk cache
    other_model = LLMPromptExtractor(fake_llm, "other-model", batch_size=8, timeout_s=5, retries=0, cache=cache)
    other_model.extract_many(captions[:1])
    assert other_model.requests_sent == 1  # the cache is keyed by (model, caption)
    messages = build_messages(["x"], load_examples())
    assert messages[0]["role"] == "system" and "JSON" in messages[0]["content"]
    assert json.loads(messages[2]["content"])[0].keys() == {"objects", "motion"}


def test_llm_malformed_reply_falls_back_to_builtin_with_reason(fake_llm, tmp_path):
    llm = LLMPromptExtractor(fake_llm, "m", batch_size=4, timeout_s=5, retries=1, cache=tmp_path / "c.jsonl")
    results = llm.extract_many(["BROKEN a woman smiles", "BROKEN leaves sway"])
    assert [r.motion for r in results] == ["smile", "sway"]
    assert all(r.source == "builtin_fallback" and "malformed" in r.note for r in results)
    assert not (tmp_path / "c.jsonl").exists()  # fallbacks are not cached: a later run asks again


def test_llm_timeout_is_retried_then_falls_back(fake_llm, tmp_path):
    llm = LLMPromptExtractor(fake_llm, "m", batch_size=4, timeout_s=0.3, retries=1, cache=None)
    began = time.perf_counter()
    results = llm.extract_many(["SLOW a horse gallops away"])
    assert time.perf_counter() - began < 5
    assert llm.requests_sent == 2
    assert results[0].motion == "gallop away" and "endpoint failed" in results[0].note


def test_llm_unreachable_endpoint_falls_back(tmp_path):
    llm = LLMPromptExtractor("http://127.0.0.1:9/v1/chat/completions", "m", timeout_s=1, retries=0)
    assert llm.extract_many(["a man walking"])[0].motion == "walk"


def test_parse_reply_rejects_wrong_shapes():
    assert parse_reply('[{"objects": [], "motion": "Smile "}]', 1) == ["smile"]
    for bad in ('{"motion": 3}', "[]", '[{"objects": []}]', "not json"):
        with pytest.raises(ValueError):
            parse_reply(bad, 1)


def test_make_extractor_uses_output_dir_cache(tmp_path):
    from omegaconf import OmegaConf

    from preprocessing.config import PreprocessConfig

    cfg = OmegaConf.structured(PreprocessConfig)
    cfg.prompt.extractor = "llm"
    ext = make_extractor(cfg.prompt, tmp_path)
    assert isinstance(ext, LLMPromptExtractor) and ext.cache.path == tmp_path / "prompt_cache.jsonl"
