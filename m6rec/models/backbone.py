"""Transformer backbones (bodies without an LM head): random init from a config, or a pretrained HF folder."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, AutoModel, PreTrainedModel


def build_backbone(vocab_size: int, config: dict[str, Any] | None = None, path: str | None = None) -> PreTrainedModel:
    """Load `path` (local folder or hub name) when given, else build `config` (needs `model_type`) from scratch.

    `vocab_size` is the tokenizer's size: a random model is built with it, a pretrained one is resized if smaller.
    """
    if path:
        model = AutoModel.from_pretrained(path)
        if model.get_input_embeddings().num_embeddings < vocab_size:
            model.resize_token_embeddings(vocab_size)
        return model
    if not config or "model_type" not in config:
        raise ValueError("model.config: needs a `model_type` (e.g. gpt2) when model.path is null")
    kwargs = {k: v for k, v in dict(config).items() if k != "model_type"}
    hf_config = AutoConfig.for_model(config["model_type"], vocab_size=vocab_size, **kwargs)
    return AutoModel.from_config(hf_config)
