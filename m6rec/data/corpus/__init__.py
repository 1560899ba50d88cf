"""Text corpora for pretraining: document sources, packing into token blocks, the DataModule (its resumable
sampler is m6rec.data.datamodules.resumable)."""

from m6rec.data.corpus.datamodule import TextCorpusDataModule
from m6rec.data.corpus.documents import BehaviourCorpus, read_documents
from m6rec.data.corpus.pack import pack_documents

__all__ = [
    "BehaviourCorpus",
    "TextCorpusDataModule",
    "pack_documents",
    "read_documents",
]
