"""Behaviour as text: templates and rendering, prompt encoding under a token budget, tokenizers."""

from m6rec.data.text.batch_prompts import encode_batch, encode_parts
from m6rec.data.text.encode import SegmentEncoder
from m6rec.data.text.render import Templates, prompt_segments, render_prompt
from m6rec.data.text.sample_prompts import encode_prompts, prompt_parts
from m6rec.data.text.tokenizer import load_pretrained_tokenizer, train_bpe_tokenizer, train_tokenizer

__all__ = [
    "SegmentEncoder",
    "Templates",
    "encode_batch",
    "encode_parts",
    "encode_prompts",
    "load_pretrained_tokenizer",
    "prompt_parts",
    "prompt_segments",
    "render_prompt",
    "train_bpe_tokenizer",
    "train_tokenizer",
]
