"""Pretraining systems: CLM learns, MLM masking is exact, perplexity is token-weighted, HF folders round-trip."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import ModelCheckpoint
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers
from torch.utils.data import DataLoader
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast

from m6rec.models.backbone import build_backbone, build_lm
from m6rec.systems.pretrain import (
    IGNORE,
    CausalLMSystem,
    MaskedLMSystem,
    SaveHFPretrained,
    bert_mask,
    save_hf_folder,
    span_mask,
)
from tests.helpers import compose_config

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models: one intra-op thread (conftest)

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0..4
N_WORDS = 40
GPT2 = {
    "model_type": "gpt2",
    "n_layer": 2,
    "n_embd": 32,
    "n_head": 4,
    "n_positions": 64,
    "resid_pdrop": 0.0,
    "embd_pdrop": 0.0,
    "attn_pdrop": 0.0,
    "bos_token_id": 3,
    "eos_token_id": 3,
}
BERT = {
    "model_type": "bert",
    "num_hidden_layers": 2,
    "hidden_size": 32,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "pad_token_id": 0,
}


def word_tokenizer() -> PreTrainedTokenizerFast:
    """Whitespace word-level tokenizer: 5 specials then w0..w39."""
    vocab = {t: i for i, t in enumerate([*SPECIALS, *(f"w{i}" for i in range(N_WORDS))])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        eos_token="[SEP]",
    )


def cyclic_corpus(rows: int = 32, length: int = 16, cycle: int = 10) -> torch.Tensor:
    """Row i = w(i), w(i+1), ... mod `cycle`: each token determines the next one."""
    return torch.tensor([[5 + (i + j) % cycle for j in range(length)] for i in range(rows)])


class TinyCorpus(L.LightningDataModule):
    """Batches {"input_ids", "attention_mask"} as the text-corpus DataModule yields them."""

    def __init__(self, input_ids: torch.Tensor, tokenizer, batch_size: int = 8, attention_mask=None):
        super().__init__()
        mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
        self.rows = [{"input_ids": i, "attention_mask": m} for i, m in zip(input_ids, mask, strict=True)]
        self.tokenizer, self.batch_size = tokenizer, batch_size

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.rows, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.rows, batch_size=self.batch_size)


def adamw(lr: float = 1e-2):
    return lambda params: torch.optim.AdamW(params, lr=lr)


def trainer(**kwargs) -> L.Trainer:
    defaults = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    return L.Trainer(**{**defaults, **kwargs})


def mean_loss(system, datamodule) -> float:
    with torch.no_grad():
        losses = [system.token_losses(b, "val") for b in datamodule.val_dataloader()]
    return torch.cat(losses).mean().item()


def test_causal_lm_loss_falls_on_a_repeated_corpus():
    L.seed_everything(0)
    tok = word_tokenizer()
    data = TinyCorpus(cyclic_corpus(), tok)
    system = CausalLMSystem(build_lm(len(tok), "clm", GPT2), optimizer=adamw())
    start = mean_loss(system, data)
    assert start > 3.0  # ~ln(45) at random init
    trainer(max_steps=30, limit_val_batches=0).fit(system, datamodule=data)
    assert mean_loss(system, data) < 0.5 * start


def test_perplexity_is_exp_of_the_token_weighted_mean_loss():
    L.seed_everything(1)
    tok = word_tokenizer()
    ids = cyclic_corpus(rows=4, length=8)
    mask = torch.tensor([[1] * 8, [1] * 8, [1] * 8, [1, 1, 1, 0, 0, 0, 0, 0]])  # batch 2 has 7 + 2 targets
    ids = ids.masked_fill(mask == 0, 0)
    data = TinyCorpus(ids, tok, batch_size=2, attention_mask=mask)
    system = CausalLMSystem(build_lm(len(tok), "clm", GPT2)).eval()
    metrics = trainer().validate(system, datamodule=data, verbose=False)[0]

    total, count, batch_means = 0.0, 0, []
    with torch.no_grad():
        for batch in data.val_dataloader():
            logits = system.model(**batch).logits.double()
            log_probs = logits.log_softmax(-1)
            batch_total, batch_count = 0.0, 0
            for row in range(len(batch["input_ids"])):
                for t in range(1, int(batch["attention_mask"][row].sum())):
                    batch_total -= log_probs[row, t - 1, batch["input_ids"][row, t]].item()
                    batch_count += 1
            total, count = total + batch_total, count + batch_count
            batch_means.append(batch_total / batch_count)
    assert count == 7 + 7 + 7 + 2
    assert metrics["val/loss"] == pytest.approx(total / count, abs=1e-5)
    assert metrics["val/perplexity"] == pytest.approx(math.exp(total / count), rel=1e-5)
    assert abs(sum(batch_means) / 2 - total / count) > 1e-3  # a mean of batch means would be a different number


def maskable_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Rows [CLS] w.. [SEP] [PAD].. with 20, 13, 7 and 1 maskable tokens."""
    rows = []
    for n in (20, 13, 7, 1):
        rows.append([2, *(5 + (j % N_WORDS) for j in range(n)), 3] + [0] * (20 - n))
    ids = torch.tensor(rows)
    return ids, ids > 4


def test_bert_mask_selects_exactly_15_percent_of_the_maskable_tokens():
    ids, maskable = maskable_batch()
    inputs, labels = bert_mask(ids, maskable, 4, 45, 0.15, torch.Generator().manual_seed(0))
    selected = labels != IGNORE
    assert selected.sum(1).tolist() == [3, 2, 1, 1]  # round(0.15 * [20, 13, 7, 1]), at least one
    assert not (selected & ~maskable).any()  # [CLS], [SEP], padding never selected
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])
    again, labels_again = bert_mask(ids, maskable, 4, 45, 0.15, torch.Generator().manual_seed(0))
    assert torch.equal(again, inputs) and torch.equal(labels_again, labels)
    _, other = bert_mask(ids, maskable, 4, 45, 0.15, torch.Generator().manual_seed(1))
    assert not torch.equal(other, labels)


def test_bert_mask_replaces_80_10_10():
    ids = torch.randint(5, 45, (200, 100), generator=torch.Generator().manual_seed(0))
    inputs, labels = bert_mask(
        ids, torch.ones_like(ids, dtype=torch.bool), 4, 45, 0.15, torch.Generator().manual_seed(0)
    )
    selected = labels != IGNORE
    assert selected.sum().item() == 200 * 15
    as_mask = (inputs[selected] == 4).float().mean().item()
    kept = (inputs[selected] == ids[selected]).float().mean().item()  # 10 % kept + random draws of the same id
    assert as_mask == pytest.approx(0.8, abs=0.02)
    assert kept == pytest.approx(0.1 + 0.1 / 45, abs=0.015)


def test_span_mask_masks_contiguous_runs_with_mask_tokens():
    ids = torch.randint(5, 45, (64, 128), generator=torch.Generator().manual_seed(0))
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = False
    inputs, labels = span_mask(ids, maskable, 4, 0.15, torch.Generator().manual_seed(0))
    selected = labels != IGNORE
    assert not selected[:, 0].any() and (inputs[selected] == 4).all() and torch.equal(labels[selected], ids[selected])
    assert 0.10 < selected.float().mean().item() < 0.17
    starts = selected & ~torch.nn.functional.pad(selected, (1, 0))[:, :-1]  # first token of each run
    assert 2.5 < selected.sum().item() / starts.sum().item() < 4.5  # merged overlapping spans make runs a bit longer


def test_masked_lm_system_learns_and_evaluates_on_fixed_masks():
    L.seed_everything(2)
    tok = word_tokenizer()
    body = torch.tensor([[5 + i % 10] * 16 for i in range(32)])  # a masked token equals its neighbours
    data = TinyCorpus(torch.cat([torch.full((32, 1), 2), body, torch.full((32, 1), 3)], dim=1), tok)
    system = MaskedLMSystem(build_lm(len(tok), "mlm", BERT), optimizer=adamw(), seed=0)
    first = trainer().validate(system, datamodule=data, verbose=False)[0]["val/loss"]
    assert trainer().validate(system, datamodule=data, verbose=False)[0]["val/loss"] == first  # same masks
    trainer(max_steps=40, limit_val_batches=0).fit(system, datamodule=data)
    assert trainer().validate(system, datamodule=data, verbose=False)[0]["val/loss"] < 0.5 * first


def test_span_objective_predicts_exactly_the_masked_tokens_with_fixed_eval_masks():
    tok = word_tokenizer()
    system = MaskedLMSystem(build_lm(len(tok), "span", BERT), tokenizer=tok, objective="span", seed=0)
    ids = torch.randint(5, 45, (8, 32), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    system.on_validation_epoch_start()
    inputs, labels = system.mask(batch, "val")
    assert torch.equal(inputs == 4, labels != IGNORE) and (labels != IGNORE).sum() > 8
    system.on_validation_epoch_start()  # each evaluation restarts the same mask stream
    assert torch.equal(system.mask(batch, "val")[1], labels)
    assert not torch.equal(system.mask(batch, "train")[1], labels)


def test_masked_lm_needs_a_mask_token():
    tok = word_tokenizer()
    tok.mask_token = None
    system = MaskedLMSystem(build_lm(len(tok), "mlm", BERT), tokenizer=tok)
    batch = {"input_ids": cyclic_corpus(2, 4), "attention_mask": torch.ones(2, 4, dtype=torch.long)}
    with pytest.raises(ValueError, match="mask token"):
        system.token_losses(batch, "train")


@pytest.fixture(scope="module")
def clm_run(tmp_path_factory) -> dict:
    """3 epochs of CLM with a checkpoint that keeps the *worst* validation loss (epoch 0), so best != last."""
    L.seed_everything(3)
    out = tmp_path_factory.mktemp("clm")
    tok = word_tokenizer()
    data = TinyCorpus(cyclic_corpus(), tok)
    system = CausalLMSystem(build_lm(len(tok), "clm", GPT2), optimizer=adamw(), hf_dir=str(out / "hf"))
    checkpoint = ModelCheckpoint(dirpath=out / "ckpt", monitor="val/loss", mode="max", save_top_k=1)
    trainer(max_epochs=3, enable_checkpointing=True, callbacks=[checkpoint]).fit(system, datamodule=data)
    best = torch.load(checkpoint.best_model_path, weights_only=True)["state_dict"]
    return {
        "hf": out / "hf",
        "best": {k.removeprefix("model."): v for k, v in best.items()},
        "system": system,
        "tokenizer": tok,
        "data": data,
        "epoch": checkpoint.best_model_path,
    }


def test_hf_folder_holds_the_best_checkpoint_bit_exactly(clm_run: dict):
    assert "epoch=0" in clm_run["epoch"]
    saved = AutoModelForCausalLM.from_pretrained(clm_run["hf"]).state_dict()
    final = clm_run["system"].model.state_dict()
    assert saved.keys() == clm_run["best"].keys()
    assert all(torch.equal(saved[k], clm_run["best"][k]) for k in saved)
    assert not torch.equal(saved["transformer.h.0.mlp.c_fc.weight"], final["transformer.h.0.mlp.c_fc.weight"])
    on_disk = load_file(clm_run["hf"] / "model.safetensors")
    assert torch.equal(on_disk["transformer.wte.weight"], clm_run["best"]["transformer.wte.weight"])


def test_hf_folder_loads_as_the_fine_tuning_body_and_tokenizer(clm_run: dict):
    tok = clm_run["tokenizer"]
    body = build_backbone(len(tok), path=str(clm_run["hf"]))
    assert type(body).__name__ == "GPT2Model"
    for name, value in body.state_dict().items():
        assert torch.equal(value, clm_run["best"][f"transformer.{name}"]), name
    assert type(AutoModel.from_pretrained(clm_run["hf"])).__name__ == "GPT2Model"
    loaded = AutoTokenizer.from_pretrained(clm_run["hf"])
    text = "[CLS] w1 w2 w39 nope [SEP]"
    assert loaded(text)["input_ids"] == tok(text)["input_ids"] == [2, 6, 7, 44, 1, 3]
    assert (loaded.pad_token, loaded.mask_token, len(loaded)) == ("[PAD]", "[MASK]", 45)


def test_continued_pretraining_starts_at_the_saved_weights(clm_run: dict):
    tok, data = clm_run["tokenizer"], clm_run["data"]
    model = build_lm(len(tok), "clm", path=str(clm_run["hf"]))
    assert all(torch.equal(v, clm_run["best"][k]) for k, v in model.state_dict().items())
    resumed = CausalLMSystem(model, optimizer=adamw())
    first = trainer().validate(resumed, datamodule=data, verbose=False)[0]["val/loss"]
    best_model = build_lm(len(tok), "clm", GPT2)
    best_model.load_state_dict(clm_run["best"])
    assert first == pytest.approx(mean_loss(CausalLMSystem(best_model), data), abs=1e-6)


def test_masked_lm_folder_loads_as_an_encoder_body(tmp_path: Path):
    tok = word_tokenizer()
    lm = build_lm(len(tok), "mlm", BERT)
    save_hf_folder(lm, tok, tmp_path / "hf")
    body = build_backbone(len(tok), path=str(tmp_path / "hf"))
    assert type(body).__name__ == "BertModel"
    lm_state = lm.state_dict()
    shared = [k for k in body.state_dict() if not k.startswith("pooler.")]  # BertModel's pooler is not in an MLM
    assert len(shared) > 30 and all(torch.equal(body.state_dict()[k], lm_state[f"bert.{k}"]) for k in shared)


def test_build_lm_names_the_objective_a_model_cannot_train():
    with pytest.raises(ValueError, match="model_type=gpt2 has no masked-LM head"):
        build_lm(45, "mlm", GPT2)
    with pytest.raises(ValueError, match="task.objective"):
        build_lm(45, "seq2seq", GPT2)
    with pytest.raises(ValueError, match="task.objective"):
        CausalLMSystem(torch.nn.Linear(1, 1), objective="mlm")


@pytest.mark.parametrize(
    ("task", "model", "system_class", "lm_class"),
    [
        ("pretrain_clm", "gpt2_tiny", CausalLMSystem, "GPT2LMHeadModel"),
        ("pretrain_mlm", "bert_tiny", MaskedLMSystem, "BertForMaskedLM"),
    ],
)
def test_task_config_builds_the_model_lm_and_system(task, model, system_class, lm_class, tmp_path: Path):
    """The pretraining task's model part (`task.model`: the chosen model with the LM head of `task.objective`)."""
    cfg = compose_config([f"task={task}", f"model={model}", "peft=none"], tmp_path)
    tok = word_tokenizer()
    lm = instantiate(cfg.task.model, vocab_size=len(tok))
    system = instantiate(cfg.task, model=lm, tokenizer=tok)
    assert isinstance(system, system_class) and type(system.model).__name__ == lm_class
    assert lm.get_input_embeddings().num_embeddings == len(tok)
    (callback,) = system.configure_callbacks()
    assert isinstance(callback, SaveHFPretrained) and callback.dirpath == tmp_path / "hf"
    batch = {"input_ids": cyclic_corpus(2, 6), "attention_mask": torch.ones(2, 6, dtype=torch.long)}
    assert system.token_losses(batch, "train").mean().item() == pytest.approx(math.log(len(tok)), abs=0.5)
    fit = trainer(max_steps=2, limit_val_batches=0)
    fit.fit(system, datamodule=TinyCorpus(cyclic_corpus(8, 6), tok))
    assert [g["weight_decay"] for g in fit.optimizers[0].param_groups] == [0.01, 0.0]  # none on biases and norms
    assert all(p.ndim == 1 for p in fit.optimizers[0].param_groups[1]["params"])
    assert (tmp_path / "hf" / "config.json").exists() and (tmp_path / "hf" / "tokenizer.json").exists()
