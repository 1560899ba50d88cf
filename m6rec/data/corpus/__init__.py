"""Text corpora for pretraining: document sources, packing into token blocks, a resumable sampler, the DataModule."""

from m6rec.data.corpus.datamodule import TextCorpusDataModule
from m6rec.data.corpus.documents import BehaviourCorpus, read_documents
from m6rec.data.corpus.pack import pack_documents
from m6rec.data.corpus.sampler import ResumableDataLoader, ResumableShardSampler

__all__ = [
    "BehaviourCorpus",
    "ResumableDataLoader",
    "ResumableShardSampler",
    "TextCorpusDataModule",
    "pack_documents",
    "read_documents",
]
