"""Frozen text encoders with one interface: ``encode(list[str]) -> (B, S, D)``.

- :class:`ByteTokenizer` + :class:`TinyTextEncoder`: for the tiny embedded default. The
  tokenizer is built in code (UTF-8 bytes -> ids), so nothing is downloaded; the encoder is a
  small ``transformers.CLIPTextModel`` with random weights drawn from a fixed seed (frozen).
  Its weights are saved with every export, so a trained model never depends on the seed again.
- :class:`CLIPTextEncoder`: SD1.5's CLIP ViT-L/14 text encoder + tokenizer from the SD folder.

An empty string is the unconditional prompt (classifier-free guidance dropout).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
BYTE_OFFSET = 3


class ByteTokenizer:
    """UTF-8 bytes -> ids: ``[BOS, b+3 ..., EOS, PAD ...]`` truncated/padded to ``max_length``.

    Hand-written because the tiny default must work with no tokenizer files at all; bytes
    cover every string, so there is no unknown token.
    """

    vocab_size = 256 + BYTE_OFFSET
    pad_token_id, bos_token_id, eos_token_id = PAD_ID, BOS_ID, EOS_ID

    def __init__(self, max_length: int = 32):
        if max_length < 2:
            raise ValueError(f"max_length must be >= 2 (BOS and EOS), got {max_length}")
        self.model_max_length = int(max_length)

    def encode(self, text: str) -> list[int]:
        body = [b + BYTE_OFFSET for b in text.encode("utf-8")][: self.model_max_length - 2]
        ids = [BOS_ID, *body, EOS_ID]
        return ids + [PAD_ID] * (self.model_max_length - len(ids))

    def decode(self, ids) -> str:
        data = bytes(int(i) - BYTE_OFFSET for i in ids if int(i) >= BYTE_OFFSET)
        return data.decode("utf-8", errors="replace")

    def __call__(self, texts: list[str]) -> dict[str, torch.Tensor]:
        return {"input_ids": torch.tensor([self.encode(t) for t in texts], dtype=torch.long)}


class _FrozenTextEncoder(nn.Module):
    """Shared behaviour: frozen, eval mode, ``encode`` without autograd."""

    def __init__(self, model: nn.Module, tokenizer):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.model.requires_grad_(False)
        self.model.eval()

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def max_length(self) -> int:
        return int(self.tokenizer.model_max_length)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids).last_hidden_state

    def encode(self, texts: list[str] | str) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        device = next(self.model.parameters()).device
        ids = self.tokenize(list(texts)).to(device)
        grad = any(p.requires_grad for p in self.model.parameters())
        with torch.set_grad_enabled(grad and torch.is_grad_enabled()):
            return self(ids)


class TinyTextEncoder(_FrozenTextEncoder):
    """Small random-init CLIP text transformer + :class:`ByteTokenizer` (no files needed)."""

    def __init__(self, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 2,
                 max_length: int = 32, seed: int = 0, model: nn.Module | None = None):
        from transformers import CLIPTextConfig, CLIPTextModel

        tokenizer = ByteTokenizer(max_length)
        if model is None:
            config = CLIPTextConfig(
                vocab_size=ByteTokenizer.vocab_size, hidden_size=hidden_size,
                intermediate_size=4 * hidden_size, num_hidden_layers=num_layers,
                num_attention_heads=num_heads, max_position_embeddings=max_length,
                pad_token_id=PAD_ID, bos_token_id=BOS_ID, eos_token_id=EOS_ID,
            )
            config._attn_implementation = "sdpa"
            # fork_rng: deterministic weights from `seed` without disturbing the caller's RNG
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                model = CLIPTextModel(config)
        super().__init__(model, tokenizer)
        self.seed = seed

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts)["input_ids"]

    def config_dict(self) -> dict:
        return {"type": "tiny", "max_length": self.max_length}

    def save(self, root: str | Path) -> None:
        """Write ``root/text_encoder`` (the byte tokenizer needs only ``max_length``)."""
        self.model.save_pretrained(str(Path(root) / "text_encoder"))

    @classmethod
    def load(cls, root: str | Path, max_length: int) -> TinyTextEncoder:
        from transformers import CLIPTextModel

        from .checkpointing import require_files

        folder = require_files(Path(root) / "text_encoder", CLIP_TEXT_FILES, what="tiny text encoder")
        model = CLIPTextModel.from_pretrained(str(folder), local_files_only=True, attn_implementation="sdpa")
        return cls(max_length=max_length, model=model)


CLIP_TEXT_FILES = ("config.json", ("model.safetensors", "pytorch_model.bin"))
CLIP_TOKENIZER_FILES = (("vocab.json", "tokenizer.json"), ("merges.txt", "tokenizer.json"))


class CLIPTextEncoder(_FrozenTextEncoder):
    """SD's frozen ``CLIPTextModel`` + ``CLIPTokenizer`` (77 tokens, padded to max length)."""

    @classmethod
    def from_folder(cls, path: str | Path, text_encoder_subfolder: str = "text_encoder",
                    tokenizer_subfolder: str = "tokenizer") -> CLIPTextEncoder:
        from transformers import CLIPTextModel, CLIPTokenizer

        from .checkpointing import require_files

        root = Path(path)
        te = require_files(root / text_encoder_subfolder, CLIP_TEXT_FILES, what="CLIP text encoder")
        tok = require_files(root / tokenizer_subfolder, CLIP_TOKENIZER_FILES, what="CLIP tokenizer")
        model = CLIPTextModel.from_pretrained(str(te), local_files_only=True, attn_implementation="sdpa")
        tokenizer = CLIPTokenizer.from_pretrained(str(tok), local_files_only=True)
        return cls(model, tokenizer)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                              truncation=True, return_tensors="pt").input_ids

    def config_dict(self) -> dict:
        return {"type": "clip"}

    def save(self, root: str | Path) -> None:
        """Write ``root/text_encoder`` and ``root/tokenizer`` (loadable by :meth:`from_folder`)."""
        root = Path(root)
        self.model.save_pretrained(str(root / "text_encoder"))
        self.tokenizer.save_pretrained(str(root / "tokenizer"))
