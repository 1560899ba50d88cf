"""Benchmark the memory-mapped corpus cache: generate a synthetic text corpus, build the token blocks, read every block
once through the training DataLoader, print sizes, times and peak RSS (target: < 1.5 GB for a 200 MB corpus).

    python benchmarks/corpus_memmap.py                         # 200 MB in a temporary folder
    python benchmarks/corpus_memmap.py --size-mb 20 --dir /tmp/corpus_bench
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from m6rec.data.corpus.datamodule import TextCorpusDataModule  # noqa: E402

SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "an", "el", "is", "or", "um", "ba", "de", "fi"]


def generate_corpus(out_dir: Path, size_mb: float, files: int = 4, seed: int = 0) -> tuple[float, int]:
    """Write about `size_mb` MB of documents (one per line, Zipf-distributed words) into `files` .txt/.jsonl files;
    return (MB written, documents)."""
    rng = np.random.default_rng(seed)
    vocab = np.array(["".join(rng.choice(SYLLABLES, size=int(rng.integers(1, 4)))) for _ in range(20_000)])
    target = int(size_mb * 1e6 / files)
    total_bytes, total_docs = 0, 0
    for k in range(files):
        path = out_dir / (f"part{k}.jsonl" if k % 2 else f"part{k}.txt")
        written = 0
        with open(path, "w", encoding="utf-8") as f:
            while written < target:
                lengths = rng.integers(20, 400, size=200)
                words = vocab[np.minimum(rng.zipf(1.2, size=int(lengths.sum())) - 1, len(vocab) - 1)]
                docs = [" ".join(w) for w in np.split(words, np.cumsum(lengths)[:-1])]
                lines = [json.dumps({"text": d}) for d in docs] if k % 2 else docs
                chunk = "\n".join(lines) + "\n"
                f.write(chunk)
                written += len(chunk.encode())
                total_docs += len(docs)
        total_bytes += written
    return total_bytes / 1e6, total_docs


def peak_rss_mb() -> tuple[float, float]:
    """Peak resident set size (MB) of this process and of its largest finished child (ru_maxrss is KB on Linux)."""
    return (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=float, default=200.0, help="corpus size to generate")
    parser.add_argument("--dir", type=Path, default=None, help="where to write corpus + cache (default: a temp dir)")
    parser.add_argument(
        "--tokenizer-sample-mb",
        type=float,
        default=10.0,
        help="train the tokenizer on about this many MB of the training documents",
    )
    parser.add_argument("--tokenizer-type", choices=["bpe", "wordpiece"], default="bpe")
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--block-size", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    with tempfile.TemporaryDirectory() as tmp:
        root = args.dir or Path(tmp)
        (root / "text").mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        corpus_mb, documents = generate_corpus(root / "text", args.size_mb)
        generate_s = time.perf_counter() - start
        sample_docs = max(1, int(documents * args.tokenizer_sample_mb / corpus_mb))
        dm = TextCorpusDataModule(
            str(root / "cache"),
            files=[str(root / "text" / "part*")],
            tokenizer_type=args.tokenizer_type,
            vocab_size=args.vocab_size,
            tokenizer_sample_docs=sample_docs,
            block_size=args.block_size,
            valid_fraction=0.01,
            batch_size=args.batch_size,
            num_workers=args.num_workers,
        )
        start = time.perf_counter()
        dm.tokenizer  # noqa: B018  (counting pass + tokenizer training on the sample)
        tokenizer_s = time.perf_counter() - start
        rss_after_tokenizer = peak_rss_mb()[0]
        start = time.perf_counter()
        dm.setup()
        build_s = time.perf_counter() - start
        start = time.perf_counter()
        blocks = sum(len(batch["input_ids"]) for batch in dm.train_dataloader())
        iterate_s = time.perf_counter() - start
        rss, rss_children = peak_rss_mb()
        stats = dm.stats

    rows = [
        ("corpus MB (generated in)", f"{corpus_mb:.1f} ({generate_s:.1f} s)"),
        ("documents (train / valid)", f"{stats['train_documents']:,} / {stats['valid_documents']:,}"),
        ("tokens (train / valid)", f"{stats['train_tokens']:,} / {stats['valid_tokens']:,}"),
        ("blocks (train / valid)", f"{stats['train_blocks']:,} / {stats['valid_blocks']:,} x {args.block_size}"),
        ("tokenizer", f"{args.tokenizer_type} {stats['vocab_size']:,}, on {sample_docs:,} docs"),
        ("count + tokenizer time s", f"{tokenizer_s:.1f} (peak RSS {rss_after_tokenizer:.0f} MB)"),
        ("build (tokenize + pack) s", f"{build_s:.1f} ({corpus_mb / build_s:.1f} MB/s)"),
        ("iterate all blocks s", f"{iterate_s:.1f} ({blocks:,} blocks, {blocks / iterate_s:,.0f} blocks/s)"),
        ("peak RSS MB (workers)", f"{rss:.0f} ({rss_children:.0f})"),
    ]
    width = max(len(k) for k, _ in rows)
    print(f"| {'measure'.ljust(width)} | value |\n|{'-' * (width + 2)}|-------|")
    for key, value in rows:
        print(f"| {key.ljust(width)} | {value} |")
    assert blocks == stats["train_blocks"], "the DataLoader did not visit every training block once"


if __name__ == "__main__":
    main()
