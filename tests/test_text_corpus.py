"""TextCorpusDataModule: mixed inputs, packing, tokenizers, resumable DDP shards, no leakage, cache, bad input."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from m6rec.data import BehaviourLogDataModule
from m6rec.data.corpus import datamodule as text_corpus_module
from m6rec.data.corpus.datamodule import TextCorpusDataModule
from m6rec.data.corpus.pack import pack_documents, token_dtype
from m6rec.data.datamodules.resumable import ResumableShardSampler
from m6rec.data.protocol.history import recent_training_history
from m6rec.data.protocol.splits import TRAIN
from tests.fixtures import make_log, write_grouplens
from tests.helpers import compose_config

WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau".split()  # noqa: SIM905


def random_corpus(path: Path, n_docs: int, seed: int = 0) -> Path:
    """n_docs lines of random words, each line starting with its own number (so blocks differ)."""
    rng = np.random.default_rng(seed)
    lines = [f"doc{k} " + " ".join(rng.choice(WORDS, size=int(rng.integers(3, 12)))) for k in range(n_docs)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def letters(k: int) -> str:
    """A distinct letters-only word per k (byte-level BPE splits digits from letters)."""
    return f"q{chr(97 + k // 26)}{chr(97 + k % 26)}z"


def word_level_tokenizer(path: Path) -> str:
    """A saved tokenizer with hand-known ids: <pad>=0 <eos>=1 a=2 b=3 c=4 d=5 <unk>=6."""
    vocab = {"<pad>": 0, "<eos>": 1, "a": 2, "b": 3, "c": 4, "d": 5, "<unk>": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    fast.save_pretrained(path)
    return str(path)


# ---------------------------------------------------------------------------------------------------- inputs
def test_mixed_txt_jsonl_parquet_inputs_in_pattern_order(tmp_path: Path):
    src = tmp_path / "src"
    (src / "deep").mkdir(parents=True)
    (src / "b.txt").write_bytes(b"second file\r\n")
    (src / "a.txt").write_bytes("first line\n\n   \nCafé 😀 line\n".encode())
    (src / "deep" / "c.jsonl").write_text('{"body": "json one", "x": 1}\n\n{"body": "json\\ntwo"}\n')
    pd.DataFrame({"body": ["pq one", None, "pq two"], "n": [1, 2, 3]}).to_parquet(src / "d.parquet")
    patterns = [str(src / "*.txt"), str(src / "**" / "*.jsonl"), str(src / "d.parquet"), str(src / "a.txt")]
    dm = TextCorpusDataModule(str(tmp_path / "data"), files=patterns, text_field="body")
    assert [p.name for p in dm.files] == ["a.txt", "b.txt", "c.jsonl", "d.parquet"]  # sorted per pattern, no repeats
    assert list(dm.documents()) == [
        "first line",
        "Café 😀 line",
        "second file",
        "json one",
        "json\ntwo",
        "pq one",
        "pq two",
    ]


# ---------------------------------------------------------------------------------------------------- packing
def test_packing_by_hand_with_a_word_level_tokenizer(tmp_path: Path):
    (tmp_path / "c.txt").write_text("a b\nc\nb c a d\nd d\n")
    tok = word_level_tokenizer(tmp_path / "tok")
    dm = TextCorpusDataModule(
        str(tmp_path / "data"),
        files=[str(tmp_path / "c.txt")],
        tokenizer=tok,
        block_size=4,
        valid_fraction=0.0,
        batch_size=2,
    )
    dm.setup()
    # a b <eos> c <eos> b c a d <eos> d d <eos> = 2 3 1 4 1 3 4 2 5 1 5 5 1: three blocks, the last 1 is cut
    assert dm.datasets["train"].memmap.tolist() == [[2, 3, 1, 4], [1, 3, 4, 2], [5, 1, 5, 5]]
    assert (dm.stats["train_documents"], dm.stats["train_tokens"], dm.stats["train_blocks"]) == (4, 13, 3)
    assert dm.stats["valid_blocks"] == 0 and len(dm.val_dataloader()) == 0
    assert (dm.cache_dir / "train.bin").stat().st_size == 3 * 4 * 2  # uint16
    batches = list(dm.train_dataloader())
    assert [len(b["input_ids"]) for b in batches] == [2, 1]
    rows = torch.cat([b["input_ids"] for b in batches])
    assert sorted(rows.tolist()) == [[1, 3, 4, 2], [2, 3, 1, 4], [5, 1, 5, 5]]
    assert batches[0]["input_ids"].dtype == torch.long and batches[0]["attention_mask"].eq(1).all()
    assert torch.equal(torch.cat([b["special_tokens_mask"] for b in batches]), (rows <= 1).long())  # <pad>, <eos>


def test_blocks_are_the_tokenized_concatenation_of_each_split(tmp_path: Path):
    corpus = random_corpus(tmp_path / "c.txt", 60)
    dm = TextCorpusDataModule(
        str(tmp_path / "data"), files=[str(corpus)], vocab_size=300, block_size=16, valid_fraction=0.25, split_seed=3
    )
    dm.setup()
    docs, is_valid, tok = list(dm.documents()), dm.is_valid, dm.tokenizer
    assert is_valid.sum() == 15 and not np.array_equal(
        is_valid,
        TextCorpusDataModule(str(tmp_path / "d2"), files=[str(corpus)], valid_fraction=0.25, split_seed=4).is_valid,
    )
    for split, flag in (("train", False), ("valid", True)):
        stream = [
            t
            for doc, v in zip(docs, is_valid, strict=True)
            if v == flag
            for t in tok.encode(doc, add_special_tokens=False) + [tok.eos_token_id]
        ]
        blocks = dm.datasets[split].memmap
        assert dm.stats[f"{split}_tokens"] == len(stream) and blocks.shape == (len(stream) // 16, 16)
        assert blocks.reshape(-1).tolist() == stream[: blocks.size]
    assert token_dtype(65535) == np.uint16 and token_dtype(65536) == np.uint32


# ---------------------------------------------------------------------------------------------------- tokenizers
def test_bpe_round_trip_and_training_documents_only(tmp_path: Path):
    lines = [f"doc {letters(k)} shared text" for k in range(40)]
    (tmp_path / "c.txt").write_text("\n".join(lines) + "\n")
    dm = TextCorpusDataModule(
        str(tmp_path / "data"), files=[str(tmp_path / "c.txt")], vocab_size=400, valid_fraction=0.2
    )
    tok = dm.tokenizer
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert (tok.pad_token, tok.eos_token, tok.mask_token) == ("<pad>", "<|endoftext|>", "<mask>")
    for text in ["word3 shared text", "  Ünïcödé 🤖\ttabs,  (3/5)?\n", "Café au lait (1994)", ""]:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    vocab = tok.get_vocab()
    in_vocab = [f"Ġ{letters(k)}" in vocab for k in range(40)]
    assert in_vocab == (~dm.is_valid).tolist()  # a held-out document's word never became a token
    tok.save_pretrained(tmp_path / "saved")
    again = PreTrainedTokenizerFast.from_pretrained(tmp_path / "saved")
    assert again.encode(lines[0]) == tok.encode(lines[0])


def test_wordpiece_special_tokens(tmp_path: Path):
    corpus = random_corpus(tmp_path / "c.txt", 40)
    dm = TextCorpusDataModule(
        str(tmp_path / "data"),
        files=[str(corpus)],
        tokenizer_type="wordpiece",
        vocab_size=200,
        block_size=16,
        valid_fraction=0.1,
    )
    tok = dm.tokenizer
    specials = [tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token]
    assert specials == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert [tok.convert_tokens_to_ids(t) for t in specials] == [0, 1, 2, 3, 4] and tok.eos_token == "[SEP]"
    assert tok("Alpha beta")["input_ids"] == [2, *tok.encode("alpha beta", add_special_tokens=False), 3]
    assert tok.convert_ids_to_tokens(tok.encode("漢", add_special_tokens=False)) == ["[UNK]"]
    dm.setup()
    assert dm.separator_id == 3
    batch = next(iter(dm.train_dataloader()))
    assert torch.equal(batch["special_tokens_mask"], (batch["input_ids"] == 3).long())
    assert batch["special_tokens_mask"].sum() > 0


# ---------------------------------------------------------------------------------------------------- shards + resume
def test_shards_are_disjoint_equal_and_cover_the_epoch():
    data = list(range(103))
    shards = [list(ResumableShardSampler(data, 2, rank, seed=5)) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 51 and not set(shards[0]) & set(shards[1])
    assert len(set(shards[0]) | set(shards[1])) == 102  # the one-block tail is dropped
    again = ResumableShardSampler(data, 2, 0, seed=5)
    assert list(again) == shards[0]
    again.set_epoch(1)
    assert list(again) != shards[0] and sorted(again.indices(1)) != sorted(shards[0])  # a new permutation per epoch


def test_sampler_resume_continues_the_epoch_exactly():
    data = list(range(50))
    full = list(ResumableShardSampler(data, 2, 1, seed=1))
    first = ResumableShardSampler(data, 2, 1, seed=1)
    it = iter(first)
    head = [next(it) for _ in range(9)]
    state = first.state_dict()
    assert state == {"epoch": 0, "position": 9, "num_replicas": 2}
    fresh = ResumableShardSampler(data, 2, 1, seed=1)
    fresh.load_state_dict(state)
    fresh.set_epoch(0)  # Lightning calls set_epoch after restoring: the resume point survives
    assert head + list(fresh) == full
    assert fresh.state_dict() == {"epoch": 1, "position": 0, "num_replicas": 2}  # a finished epoch = next epoch
    assert len(list(fresh)) == 25  # the next iteration is a whole epoch again


def test_loader_state_counts_delivered_batches_not_worker_prefetch(tmp_path: Path):
    corpus = random_corpus(tmp_path / "c.txt", 120)
    dm = TextCorpusDataModule(
        str(tmp_path / "data"), files=[str(corpus)], vocab_size=300, block_size=8, batch_size=4, num_workers=2
    )
    dm.setup()
    full = [r for b in dm.train_dataloader() for r in b["input_ids"].tolist()]
    loader = dm.train_dataloader()
    it = iter(loader)
    head = [r for _ in range(3) for r in next(it)["input_ids"].tolist()]
    assert loader.sampler.position > 12  # the workers ran ahead
    state = loader.state_dict()
    assert state["position"] == 12
    resumed = dm.train_dataloader()
    resumed.load_state_dict(state)
    assert head + [r for b in resumed for r in b["input_ids"].tolist()] == full
    del it


class _RecordBlocks(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.rows: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.rows += batch["input_ids"].tolist()
        return self.weight.sum() * batch["input_ids"].float().mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_resume_neither_repeats_nor_skips(tmp_path: Path):
    """Checkpoints saved after batch 3 (mid-epoch) and after the last batch of epoch 0, resumed by Lightning."""
    corpus = random_corpus(tmp_path / "c.txt", 60)
    kwargs = {
        "data_dir": str(tmp_path / "data"),
        "files": [str(corpus)],
        "vocab_size": 300,
        "block_size": 16,
        "batch_size": 4,
        "valid_fraction": 0.0,
    }
    trainer_kwargs = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "limit_val_batches": 0,
        "max_epochs": 2,
    }
    no_ckpt = {**trainer_kwargs, "enable_checkpointing": False}

    whole = _RecordBlocks()
    L.Trainer(**no_ckpt).fit(whole, datamodule=TextCorpusDataModule(**kwargs))
    per_epoch = len(whole.rows) // 2
    steps_per_epoch = -(-per_epoch // 4)
    assert steps_per_epoch > 3 and whole.rows[:per_epoch] != whole.rows[per_epoch:]  # two different epoch orders
    every_step = L.pytorch.callbacks.ModelCheckpoint(tmp_path / "ckpt", "{step}", every_n_train_steps=1, save_top_k=-1)
    first = _RecordBlocks()
    L.Trainer(callbacks=[every_step], **{**trainer_kwargs, "max_steps": steps_per_epoch + 1}).fit(
        first, TextCorpusDataModule(**kwargs)
    )
    for step, rows in ((3, 12), (steps_per_epoch, per_epoch)):
        resumed = _RecordBlocks()
        ckpt = tmp_path / "ckpt" / f"step={step}.ckpt"
        L.Trainer(**no_ckpt).fit(resumed, TextCorpusDataModule(**kwargs), ckpt_path=ckpt)
        assert first.rows[:rows] + resumed.rows == whole.rows, f"resumed from step {step}"


# ---------------------------------------------------------------------------------------------------- leakage
def test_derived_corpus_holds_only_training_interactions(tmp_path: Path, ml100k_dir: Path):
    dm = TextCorpusDataModule(
        str(tmp_path / "data"), behaviour={"root": str(ml100k_dir)}, vocab_size=400, block_size=32
    )
    docs = list(dm.documents())
    log = BehaviourLogDataModule(str(tmp_path / "data"), root=str(ml100k_dir))
    samples = log.samples()
    is_train = (samples["split"] == TRAIN).to_numpy()
    prompts = log.render_texts(samples, recent_training_history(samples, is_train, 10))  # the CTR prompts
    held_out = [p for p, t in zip(prompts, is_train, strict=True) if not t]
    assert len(held_out) > 50 and not set(held_out) & set(docs)
    train_items = set(samples.loc[is_train, "item_id"])
    assert len(docs) == len(train_items) + is_train.sum()  # item texts + one sentence per training interaction
    assert docs[len(train_items) :] == [p for p, t in zip(prompts, is_train, strict=True) if t]
    # independently of the renderer: a user's held-out item never appears in that user's sentences
    users = {u["user_id"]: u["age"] for u in make_log()["users"]}
    titles = {it["item_id"]: it["title"] for it in make_log()["items"]}
    for (user, item), split in zip(
        samples[["user_id", "item_id"]].itertuples(index=False), samples["split"], strict=True
    ):
        if split != TRAIN:
            own = [d for d in docs if d.startswith(f"A {users[user]}-year-old")]
            assert own and not any(f"{titles[item]} (" in d for d in own)


def test_cold_items_reach_neither_corpus_nor_tokenizer(tmp_path: Path):
    log = make_log()
    for it in log["items"]:
        it["title"] = f"Film {letters(it['item_id'])}"
    root = write_grouplens(tmp_path / "ml", log)
    behaviour = {"root": str(root), "split": "cold_items", "split_ratios": [0.6, 0.2, 0.2]}
    split = BehaviourLogDataModule(str(tmp_path), **behaviour)
    codes, items = split.split_codes(), split.interactions["item_id"].to_numpy()
    train_items, held_out = set(items[codes == TRAIN]), set(items[codes != TRAIN])
    assert len(held_out) >= 6 and not train_items & held_out
    for kind, prefix in (("bpe", "Ġ"), ("wordpiece", "")):
        dm = TextCorpusDataModule(
            str(tmp_path / kind), behaviour=behaviour, tokenizer_type=kind, vocab_size=3000, block_size=32
        )
        text = "\n".join(dm.documents())
        vocab = dm.tokenizer.get_vocab()
        words = {i: letters(i) for i in train_items | held_out}
        assert all(words[i] in text and prefix + words[i] in vocab for i in train_items)  # the test can see words
        assert not any(words[i] in text or prefix + words[i] in vocab for i in held_out)


# ---------------------------------------------------------------------------------------------------- cache
def test_cache_is_reused_and_a_failed_build_leaves_no_bin(tmp_path: Path, monkeypatch):
    corpus = random_corpus(tmp_path / "c.txt", 50)
    kwargs = {"data_dir": str(tmp_path / "data"), "files": [str(corpus)], "vocab_size": 300, "block_size": 8}
    built = TextCorpusDataModule(**kwargs)
    built.setup()
    expected = built.datasets["train"].memmap.tolist()

    def fail(*args, **kwargs):
        raise AssertionError("rebuilt")

    monkeypatch.setattr(text_corpus_module, "pack_documents", fail)
    reused = TextCorpusDataModule(**kwargs)
    reused.setup()  # same files and settings: the cache is read, never rebuilt
    assert reused.fingerprint == built.fingerprint and reused.datasets["train"].memmap.tolist() == expected

    random_corpus(corpus, 50, seed=1)  # the source changed: a new fingerprint and a new build, which fails midway
    failing = TextCorpusDataModule(**kwargs)
    failing.tokenizer  # noqa: B018  (count the documents and train the tokenizer before they start failing)
    docs = list(failing.documents())

    def documents_then_crash():
        yield from docs[:30]
        raise OSError("disk full")

    failing.documents = documents_then_crash
    monkeypatch.setattr(text_corpus_module, "pack_documents", functools.partial(pack_documents, chunk_documents=4))
    with pytest.raises(OSError, match="disk full"):
        failing.setup()
    assert failing.fingerprint != built.fingerprint
    corpus_dir = tmp_path / "data" / "corpus"
    assert sorted(p.relative_to(corpus_dir).as_posix() for p in corpus_dir.rglob("*.bin")) == [
        f"{built.fingerprint}/train.bin",
        f"{built.fingerprint}/valid.bin",
    ]
    assert not [p for p in corpus_dir.iterdir() if p.name.startswith(".")]  # no temporary folder left
    rebuilt = TextCorpusDataModule(**kwargs)
    rebuilt.setup()
    meta = json.loads((rebuilt.cache_dir / "meta.json").read_text())
    assert rebuilt.fingerprint == failing.fingerprint and meta["train"]["documents"] + meta["valid"]["documents"] == 50


# ---------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.jsonl", '{"text": "ok"}\n{"text": oops}\n', r"bad\.jsonl:2: not valid JSON"),
        ("bad.jsonl", '{"body": "no text"}\n', r"bad\.jsonl:1: no 'text' field \(data\.text_field\)"),
        ("bad.jsonl", '{"text": 3}\n', r"bad\.jsonl:1: field 'text' is int, not a string"),
        ("bad.txt", b"fine\n\xff\xfe\n", r"bad\.txt:2: not UTF-8 text"),
        ("bad.csv", "a,b\n", r"data\.files: .*bad\.csv: unsupported file type '\.csv'"),
        ("bad.parquet", None, r"bad\.parquet: no column 'text' \(data\.text_field\)"),
        ("bad.parquet", b"not parquet", r"data\.files: cannot read .*bad\.parquet as parquet"),
        ("empty.txt", "\n  \n", r"data: the corpus is empty"),
        ("short.txt", "one line\n", r"data: the training corpus has \d+ tokens, fewer than one block"),
    ],
)
def test_bad_input_is_a_one_line_error(tmp_path: Path, name: str, content, message: str):
    path = tmp_path / name
    if content is None:
        pd.DataFrame({"body": ["x"]}).to_parquet(path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    dm = TextCorpusDataModule(str(tmp_path / "data"), files=[str(path)], vocab_size=300, valid_fraction=0.0)
    with pytest.raises(ValueError, match=message) as err:
        dm.setup()
    assert "\n" not in str(err.value)


def test_bad_settings(tmp_path: Path):
    with pytest.raises(ValueError, match=r"data\.files: no file matches '.*missing\*\.txt'"):
        TextCorpusDataModule(str(tmp_path), files=[str(tmp_path / "missing*.txt")]).setup()
    with pytest.raises(ValueError, match=r"data\.tokenizer_type: 'sentencepiece'"):
        TextCorpusDataModule(str(tmp_path), tokenizer_type="sentencepiece")
    with pytest.raises(ValueError, match=r"data\.valid_fraction"):
        TextCorpusDataModule(str(tmp_path), valid_fraction=1.0)


# ---------------------------------------------------------------------------------------------------- configs
def test_corpus_configs_instantiate(tmp_path: Path, ml100k_dir: Path):
    cfg = compose_config(
        [
            "data=corpus_ml100k",
            f"data.behaviour.root={ml100k_dir}",
            f"paths.data_dir={tmp_path}",
            "data.vocab_size=500",
            "data.block_size=32",
        ],
        tmp_path,
    )
    dm = instantiate(cfg.data)
    assert isinstance(dm, TextCorpusDataModule) and isinstance(dm.behaviour.module, BehaviourLogDataModule)
    dm.setup()
    assert dm.stats["train_blocks"] > 100 and dm.stats["valid_blocks"] > 0 and len(dm.tokenizer) == 500
    (tmp_path / "text").mkdir()
    random_corpus(tmp_path / "text" / "a" / "c.txt", 30)
    cfg = compose_config(
        [
            "data=corpus_files",
            f"paths.data_dir={tmp_path}",
            "data.vocab_size=300",
            "data.tokenizer_sample_docs=10",
            "data.num_workers=0",
        ],
        tmp_path,
    )
    dm = instantiate(cfg.data)
    assert [p.name for p in dm.files] == ["c.txt"] and len(list(dm.training_documents(10))) == 10
    dm.setup()
    assert dm.stats["train_documents"] + dm.stats["valid_documents"] == 30


def test_id_token_corpus_reads_the_logs_vocabulary_and_fine_tuning_keeps_its_ids(tmp_path: Path, ml100k_dir: Path):
    templates = {
        "user": "{user_token} A {age}-year-old {gender} {occupation}",
        "history_item": "{item_token} {title} ({rating:.0f}/5)",
        "candidate": "{item_token} {title} ({year}), {genres}",
    }
    behaviour = {"root": str(ml100k_dir), "id_tokens": True, "templates": templates}
    dm = TextCorpusDataModule(str(tmp_path / "data"), behaviour=behaviour, block_size=32)
    log = BehaviourLogDataModule(str(tmp_path / "data"), **behaviour)
    assert dm.tokenizer.get_vocab() == log.tokenizer.get_vocab()  # metadata BPE + one token per user / item
    sentence = next(d for d in dm.documents() if " rated <i_" in d)
    words = sentence.split()
    ids = dm.tokenizer(sentence)["input_ids"]
    assert ids[0] == log.tokenizer.convert_tokens_to_ids(words[0]) >= len(log.tokenizer) - 46  # <u_N>: 16 + 30 ids
    item = next(w for w in words if w.startswith("<i_"))
    assert log.tokenizer.convert_tokens_to_ids(item) in ids  # one id, not BPE pieces of "<i_12>"
    dm.setup()
    assert dm.stats["vocab_size"] == len(log.tokenizer)
    saved = tmp_path / "hf"  # what the pretraining run saves beside its weights; fine-tuning loads it as its tokenizer
    dm.tokenizer.save_pretrained(saved)
    tuned = BehaviourLogDataModule(str(tmp_path / "data"), tokenizer=str(saved), **behaviour)
    assert tuned.tokenizer.get_vocab() == log.tokenizer.get_vocab() and len(tuned.tokenizer) == len(log.tokenizer)
    with pytest.raises(ValueError, match="data.tokenizer_type=wordpiece: a behaviour log with id_tokens"):
        _ = TextCorpusDataModule(str(tmp_path / "data"), behaviour=behaviour, tokenizer_type="wordpiece").tokenizer
