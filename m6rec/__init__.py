"""m6rec: recommendation with language models (behaviour as text, pretrain, adapt)."""

__version__ = "0.1.0"
