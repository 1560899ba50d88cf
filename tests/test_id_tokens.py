"""ID tokens (data.id_tokens, data=ml100k_id_tokens) and a trainable embedding table beside LoRA (peft=lora_emb): one
token per user and item, placed where the templates say, never carrying a held-out interaction into a prompt; the
embedding rows learn while the frozen backbone does not."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from m6rec.build import build_datamodule_and_system
from m6rec.data import BehaviourLogDataModule
from m6rec.data.protocol.splits import TRAIN
from m6rec.data.text.id_tokens import id_token_ids, item_token, user_token
from m6rec.peft import count_parameters
from tests.helpers import compose_config, fit_one_batch

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")]
ID_TEMPLATES = {
    "user": "{user_token} A {age}-year-old {gender} {occupation}",
    "history_item": "{item_token} {title} ({rating:.0f}/5)",
    "candidate": "{item_token} {title} ({year}), {genres}",
}


def id_datamodule(ml100k_dir: Path, tmp_path: Path, **kwargs) -> BehaviourLogDataModule:
    return BehaviourLogDataModule(
        data_dir=str(tmp_path), root=str(ml100k_dir), id_tokens=True, templates=ID_TEMPLATES, max_length=512, **kwargs
    )


def test_one_token_per_user_and_item_after_the_text_vocabulary(ml100k_dir: Path, tmp_path: Path):
    text_only = BehaviourLogDataModule(data_dir=str(tmp_path), root=str(ml100k_dir)).tokenizer
    dm = id_datamodule(ml100k_dir, tmp_path)
    tok, tables = dm.tokenizer, dm.tables
    n_users, n_items = len(tables.users), len(tables.items)  # fixture: 16 users, 30 items
    assert (n_users, n_items) == (16, 30)
    assert len(tok) == len(text_only) + n_users + n_items
    text_part = {k: v for k, v in tok.get_vocab().items() if v < len(text_only)}
    assert text_part == text_only.get_vocab()  # the BPE part is the text-only tokenizer's, unchanged by the ID columns
    ids = id_token_ids(tok)
    assert ids == list(range(len(text_only), len(tok)))

    def encode(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    # one id, which takes the space before it; the text around it tokenizes as without it
    assert encode(f" rated {item_token(7)} Heat") == encode(" rated") + [
        tok.convert_tokens_to_ids(item_token(7))
    ] + encode(" Heat")
    assert tok.convert_ids_to_tokens(ids[0]) == user_token(1) and tok.convert_ids_to_tokens(ids[-1]) == item_token(30)


def test_prompts_carry_the_user_the_candidate_and_only_earlier_training_items(ml100k_dir: Path, tmp_path: Path):
    dm = id_datamodule(ml100k_dir, tmp_path, history_len=50)
    dm.setup()
    tok = dm.tokenizer
    token_entity = {i: tok.convert_ids_to_tokens(i) for i in id_token_ids(tok)}
    inter = dm.interactions.assign(split=dm.split_codes())
    train = inter[inter["split"] == TRAIN]
    checked = 0
    for name in ("train", "valid", "test"):
        ds = dm.datasets[name]
        for ids, user, item in zip(ds.input_ids, ds.user_ids, ds.item_ids, strict=True):
            names = [token_entity[i] for i in ids.tolist() if i in token_entity]
            assert names[0] == user_token(user) and names[-1] == item_token(item)
            history = {int(n[3:-1]) for n in names[1:-1]}
            assert all(n.startswith("<i_") for n in names[1:-1])
            row = inter[(inter["user_id"] == user) & (inter["item_id"] == item)].iloc[0]
            mine = train[(train["user_id"] == user) & (train["timestamp"] < row["timestamp"])]
            assert history <= set(mine["item_id"].tolist())  # never a validation / test item, never a later one
            assert len(history) == min(len(mine), 50)
            checked += len(history)
    assert checked > 1000


def test_embedding_rows_train_beside_lora_while_the_backbone_stays_frozen(ml100k_dir: Path, tmp_path: Path):
    cfg = compose_config(
        ["experiment=ctr_lora", f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'cache'}"], tmp_path
    )  # the default run: data=ml100k_id_tokens, peft=lora_emb
    dm, system = build_datamodule_and_system(cfg)
    dm.setup()
    d = 128  # ctr_lora's blocks are 128-d: per block LoRA r=16 on c_attn (d→3d), attn c_proj, c_fc (d→4d), mlp c_proj
    lora = 2 * 16 * ((d + 3 * d) + (d + d) + (d + 4 * d) + (4 * d + d)) + d + 1  # two blocks, plus the head
    assert count_parameters(system.model)["trainable"] == lora + len(dm.tokenizer) * d  # + the embedding table
    params = dict(system.model.named_parameters())
    emb = next(p for n, p in params.items() if "wte.modules_to_save" in n)
    original = next(p for n, p in params.items() if "wte.original_module" in n)
    frozen = {n: p.detach().clone() for n, p in params.items() if not p.requires_grad}
    assert not original.requires_grad and emb.requires_grad and emb.shape[0] == len(dm.tokenizer)
    assert any("c_attn.base_layer" in n for n in frozen)  # the GPT-2 blocks are frozen, LoRA trains
    before = emb.detach().clone()
    batch = next(iter(dm.train_dataloader()))
    losses = fit_one_batch(system, batch, steps=5, lr=1e-3)
    assert losses[-1] < losses[0]
    seen = np.unique(batch["input_ids"][batch["attention_mask"].bool()].numpy())
    changed = np.flatnonzero((emb.detach() != before).any(dim=1).numpy())
    assert set(changed) == set(seen)  # every row the batch read moved, no other row did
    assert set(seen) & set(id_token_ids(dm.tokenizer))  # including ID-token rows
    for name, value in frozen.items():
        assert torch.equal(params[name].detach(), value), name


def test_the_no_language_control_prompts_hold_ids_and_ratings_only(ml100k_dir: Path, tmp_path: Path):
    """experiment=ctr_lora_ids: every prompt decodes to ID tokens, ratings and the fixed prompt words — no title, year,
    genre or user attribute."""
    cfg = compose_config(["experiment=ctr_lora_ids", f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path}"], tmp_path)
    datamodule, _ = build_datamodule_and_system(cfg)
    datamodule.setup()
    tok = datamodule.tokenizer
    fixed = {"rated", "nothing", "yet.", "Will", "he", "she", "enjoy"}
    for ids in datamodule.datasets["train"].input_ids[:50]:
        text = tok.decode(ids.tolist())
        words = re.sub(r"<[ui]_\d+>|\(\d/5\)[;.]?|\?", " ", text).split()
        assert set(words) <= fixed, text
