"""Transformer models from a config (random init) or a pretrained folder: bodies for fine-tuning (`build_backbone`)
and bodies with their LM head for pretraining (`build_lm`). A path may be `pypi:<package>` (m6rec.models.pretrained)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM, PreTrainedModel

from m6rec.models.pretrained import resolve_model_path

# objective → the HF auto class with that head; "span" is span corruption predicted by a masked-LM head
LM_CLASSES = {"clm": AutoModelForCausalLM, "mlm": AutoModelForMaskedLM, "span": AutoModelForMaskedLM}


def build_backbone(vocab_size: int, config: dict[str, Any] | None = None, path: str | None = None) -> PreTrainedModel:
    """Load `path` (local folder or hub name) when given, else build `config` (needs `model_type`) from scratch.

    `vocab_size` is the tokenizer's size: a random model is built with it, a pretrained one is resized if smaller.
    """
    return _build(AutoModel, vocab_size, config, path)


def build_lm(
    vocab_size: int, objective: str, config: dict[str, Any] | None = None, path: str | None = None
) -> PreTrainedModel:
    """The same body as `build_backbone` plus the LM head of `objective` (clm: causal, mlm/span: masked).

    From `path` this is continued pretraining; a folder it saves loads back with `build_backbone(path=...)`.
    """
    if objective not in LM_CLASSES:
        raise ValueError(f"task.objective: expected one of {sorted(LM_CLASSES)}, got {objective!r}")
    try:
        return _build(LM_CLASSES[objective], vocab_size, config, path)
    except ValueError as err:
        if "Unrecognized configuration class" not in str(err):
            raise
        kind = "causal" if objective == "clm" else "masked"
        where = f"model.backbone.path={path}" if path else f"model.backbone.config.model_type={config['model_type']}"
        raise ValueError(f"task.objective={objective}: {where} has no {kind}-LM head") from None


def _build(auto_class: type, vocab_size: int, config: dict[str, Any] | None, path: str | None) -> PreTrainedModel:
    if path:
        model = auto_class.from_pretrained(resolve_model_path(path))
        if model.get_input_embeddings().num_embeddings < vocab_size:
            model.resize_token_embeddings(vocab_size)
        return model.train()  # from_pretrained returns eval mode: dropout would stay off during fine-tuning
    if not config or "model_type" not in config:
        raise ValueError("model.config: needs a `model_type` (e.g. gpt2) when model.path is null")
    if isinstance(config, DictConfig):  # nested nodes (e.g. llama's rope_parameters) must reach HF as plain dicts
        config = OmegaConf.to_container(config, resolve=True)
    kwargs = {k: v for k, v in config.items() if k != "model_type"}
    hf_config = AutoConfig.for_model(config["model_type"], vocab_size=vocab_size, **kwargs)
    return auto_class.from_config(hf_config)
