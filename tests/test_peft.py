"""The PEFT zoo: trainable counts by hand, pooling under virtual tokens, adapters as the identity, option tuning's
head, adapter-only checkpoints, a fast_dev_run per method, and learning with option tuning and adapters."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from peft import PrefixTuningConfig, PromptTuningConfig

import run
from m6rec.build import build_datamodule_and_system
from m6rec.models.backbone import build_backbone
from m6rec.models.scorer import TextScorer
from m6rec.peft import apply_peft, count_parameters
from m6rec.peft.adapter import Adapters, BottleneckAdapter
from m6rec.peft.checkpoint import IDENTITY_KEY, BackboneMismatchError
from m6rec.peft.freeze import TopKLayers
from m6rec.peft.option import OptionTuning
from m6rec.systems.ctr import CTRSystem
from tests.helpers import CONF, auc_by_hand, compose_config

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing")  # peft calls a deprecated HF property

D, LAYERS, FFN, N_VIRTUAL, HEAD = 64, 2, 256, 16, 64 + 1  # the tiny models' sizes, conf/peft's token counts
BLOCK = 2 * D + (D * 3 * D + 3 * D) + (D * D + D) + 2 * D + (D * FFN + FFN) + (FFN * D + D)  # one GPT-2 block


def adapter_size(bottleneck: int) -> int:
    return 2 * D * bottleneck + bottleneck + D  # down (weight + bias) + up (weight + bias)


TRAINABLE = {  # peft=<method> → trainable parameters of the tiny GPT-2 scorer, by hand
    "frozen": HEAD,
    "top_k_layers": BLOCK + HEAD,  # k = 1
    "lora": 32833,
    "prefix": N_VIRTUAL * LAYERS * 2 * D + HEAD,  # a key and a value per virtual token and layer
    "prompt": N_VIRTUAL * D + HEAD,
    "ia3": LAYERS * (3 * D + FFN) + HEAD,  # c_attn's output (q, k, v) and mlp.c_proj's input rescaled
    "adapter": LAYERS * 2 * adapter_size(16) + HEAD,
    "option": N_VIRTUAL * D + 2,  # prompts (the last two are the options) + one bias per option, no linear head
    "option_adapter": N_VIRTUAL * D + 2 + LAYERS * adapter_size(8),
}
# BERT LoRA (r = 16) on query, key, value, dense: 4 maps D→D and 2 FFN maps per layer, plus pooler.dense ("dense")
BERT_LORA = LAYERS * (4 * 16 * 2 * D + 2 * 16 * (D + FFN)) + 16 * 2 * D + HEAD
BERT_KEYS = {
    "ia3_targets": ["key", "value", "output.dense"],
    "ffn_output": ["output.dense"],
    "adapter_after": ["attention.output.dense", "output.dense"],
}  # block-relative names for adapters


def tiny(kind: str, vocab: int = 100) -> torch.nn.Module:
    config = (
        {
            "n_layer": LAYERS,
            "n_embd": D,
            "n_head": 4,
            "n_positions": 64,
            "resid_pdrop": 0.0,
            "embd_pdrop": 0.0,
            "attn_pdrop": 0.0,
            "bos_token_id": 1,
            "eos_token_id": 1,
        }
        if kind == "gpt2"
        else {
            "num_hidden_layers": LAYERS,
            "hidden_size": D,
            "num_attention_heads": 4,
            "intermediate_size": FFN,
            "max_position_embeddings": 64,
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
        }
    )
    return build_backbone(vocab, {"model_type": kind, **config}).eval()


def right_padded(vocab: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """Three prompts of 9, 6 and 3 real tokens, right-padded with id 0."""
    ids = torch.randint(2, vocab, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    for row, length in ((1, 6), (2, 3)):
        ids[row, length:], mask[row, length:] = 0, 0
    return ids, mask


def peft_and_backbone(model: str, peft: str) -> tuple[object, torch.nn.Module]:
    """conf/peft/<peft>.yaml resolved against conf/model/<model>.yaml (as Hydra composes them), and that backbone."""
    cfg = OmegaConf.create(
        {
            "model": OmegaConf.load(CONF / "model" / f"{model}.yaml"),
            "peft": OmegaConf.load(CONF / "peft" / f"{peft}.yaml"),
        }
    )
    for key, value in BERT_KEYS.items() if model == "bert_tiny" else ():
        if key not in cfg.model:  # until conf/model/bert_tiny.yaml names them
            cfg.model[key] = value
    return instantiate(cfg.peft), instantiate(cfg.model.backbone, vocab_size=100)


@pytest.mark.parametrize("model", ["gpt2_tiny", "bert_tiny"])
@pytest.mark.parametrize("peft", sorted(TRAINABLE))
def test_each_method_trains_what_it_should_on_gpt2_and_bert(peft: str, model: str):
    torch.manual_seed(0)
    method, backbone = peft_and_backbone(model, peft)
    scorer = TextScorer(apply_peft(backbone, method), D, pooling="last" if model == "gpt2_tiny" else "first")
    counts = count_parameters(scorer)
    assert counts["trainable"] == (BERT_LORA if (model, peft) == ("bert_tiny", "lora") else TRAINABLE[peft])
    assert counts["trainable_pct"] == pytest.approx(100 * counts["trainable"] / counts["total"])
    ids, mask = right_padded()
    scorer(ids, mask).sum().backward()
    trained = {n for n, p in scorer.named_parameters() if p.requires_grad and p.grad is not None and p.grad.any()}
    assert any(n.startswith("head.") for n in trained)  # the head (or the option embeddings) always trains


@pytest.mark.parametrize("method, offset", [("prompt", N_VIRTUAL), ("prefix", 0), ("option", N_VIRTUAL)])
def test_the_pooled_state_is_the_last_real_token_after_virtual_tokens(method: str, offset: int):
    config = {
        "prompt": PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=N_VIRTUAL),
        "prefix": PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=N_VIRTUAL),
        "option": OptionTuning(n_prompt=N_VIRTUAL),
    }[method]
    torch.manual_seed(0)
    scorer = TextScorer(apply_peft(tiny("gpt2"), config), D).eval()
    seen = {}
    scorer.backbone.register_forward_hook(lambda m, args, out: seen.update(hidden=out.last_hidden_state))
    scorer.head.register_forward_pre_hook(lambda m, args: seen.update(pooled=args[0]))
    ids, mask = right_padded()
    with torch.no_grad():
        scores = scorer(ids, mask)
        hidden, pooled = seen["hidden"], seen["pooled"]
    assert hidden.shape == (3, offset + 9, D)  # prompt tuning prepends positions, a prefix does not
    for row, last in enumerate((8, 5, 2)):
        assert torch.equal(pooled[row], hidden[row, offset + last])
        with torch.no_grad():
            alone = scorer(ids[row : row + 1, : last + 1], mask[row : row + 1, : last + 1])  # no pads
        assert torch.allclose(alone, scores[row], atol=1e-5)


@pytest.mark.parametrize("method", ["prompt", "prefix", "option"])
def test_virtual_tokens_extend_the_attention_mask_of_an_encoder(method: str):
    """BERT attends both ways: a [CLS] score independent of the padding shows the mask was extended correctly."""
    config = {
        "prompt": PromptTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=4),
        "prefix": PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=4),
        "option": OptionTuning(n_prompt=4),
    }[method]
    torch.manual_seed(0)
    scorer = TextScorer(apply_peft(tiny("bert"), config), D, pooling="first").eval()
    ids, mask = right_padded()
    with torch.no_grad():
        scores = scorer(ids, mask)
        for row, length in enumerate((9, 6, 3)):
            alone = scorer(ids[row : row + 1, :length], mask[row : row + 1, :length])
            assert torch.allclose(alone, scores[row], atol=1e-5)
        other_pads = scorer(torch.where(mask.bool(), ids, 7), mask)
    assert torch.allclose(other_pads, scores, atol=1e-5)


@pytest.mark.parametrize(
    "kind, after", [("gpt2", ["attn.c_proj", "mlp.c_proj"]), ("bert", ["attention.output.dense", "output.dense"])]
)
def test_fresh_adapters_leave_the_backbone_bit_exact_and_count_by_hand(kind: str, after: list[str]):
    torch.manual_seed(0)
    reference = tiny(kind)
    torch.manual_seed(0)
    adapted = Adapters(after=after, bottleneck=8).apply(tiny(kind))  # the same backbone weights, plus adapters
    ids, mask = right_padded()
    with torch.no_grad():
        before = reference(input_ids=ids, attention_mask=mask).last_hidden_state
        assert torch.equal(adapted(input_ids=ids, attention_mask=mask).last_hidden_state, before)
        adapters = [m for m in adapted.modules() if isinstance(m, BottleneckAdapter)]
        adapters[0].up.bias.fill_(0.1)
        assert not torch.equal(adapted(input_ids=ids, attention_mask=mask).last_hidden_state, before)
    assert len(adapters) == LAYERS * 2
    assert count_parameters(adapted)["trainable"] == LAYERS * 2 * (2 * D * 8 + 8 + D)


def test_top_k_layers_trains_exactly_the_top_blocks():
    gpt2, bert = TopKLayers(k=1).apply(tiny("gpt2")), TopKLayers(k=1).apply(tiny("bert"))
    assert {n for n, p in gpt2.named_parameters() if p.requires_grad} == {
        n for n, _ in gpt2.named_parameters() if n.startswith("h.1.")
    }
    assert {n for n, p in bert.named_parameters() if p.requires_grad} == {
        n for n, _ in bert.named_parameters() if n.startswith("encoder.layer.1.")
    }
    with pytest.raises(ValueError, match=r"peft\.k: expected 0\.\.2"):
        TopKLayers(k=3).apply(tiny("gpt2"))


def test_option_tuning_scores_with_its_option_embeddings():
    torch.manual_seed(0)
    scorer = TextScorer(apply_peft(tiny("gpt2"), OptionTuning(n_prompt=5, num_options=2)), D).eval()
    assert scorer.head.prompt is scorer.backbone.prompt  # tied: the classifier weights are the last prompts
    with torch.no_grad():
        scorer.head.bias.copy_(torch.tensor([0.3, -0.2]))
    seen = {}
    scorer.head.register_forward_pre_hook(lambda m, args: seen.update(pooled=args[0]))
    ids, mask = right_padded()
    scores = scorer(ids, mask)
    yes, no = scorer.backbone.prompt[3], scorer.backbone.prompt[4]
    expected = seen["pooled"] @ yes + 0.3 - (seen["pooled"] @ no - 0.2)
    assert torch.allclose(scores, expected, atol=1e-6)
    scores.sum().backward()
    assert scorer.backbone.prompt.grad[:3].abs().sum() > 0  # the plain prompts learn through the input
    assert count_parameters(scorer)["trainable"] == 5 * D + 2
    with pytest.raises(ValueError, match="peft.num_options: a binary score needs 2 options"):
        TextScorer(apply_peft(tiny("gpt2"), OptionTuning(n_prompt=5, num_options=3)), D)


def test_prompt_learning_config_errors_name_the_key():
    from transformers import DistilBertConfig, DistilBertModel

    distilbert = DistilBertModel(DistilBertConfig(vocab_size=100, dim=D, n_layers=1, n_heads=4, hidden_dim=FFN))
    with pytest.raises(ValueError, match="peft=prefix: DistilBertModel takes no past_key_values"):
        apply_peft(distilbert, PrefixTuningConfig(task_type="FEATURE_EXTRACTION", num_virtual_tokens=4))
    with pytest.raises(ValueError, match="peft.task_type: peft=prompt on a base model needs FEATURE_EXTRACTION"):
        apply_peft(tiny("gpt2"), PromptTuningConfig(num_virtual_tokens=4))


# --- on the data fixture ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")  # one tokenizer / prompt cache for the whole module


def data_config(tmp_path: Path, ml100k_dir: Path, cache_dir: Path, *overrides: str):
    return compose_config(
        [
            "experiment=ctr_lora",
            "model.backbone.config.n_embd=64",  # the tiny GPT-2 whose TRAINABLE counts are worked out above
            "data.batch_size=32",
            f"data.root={ml100k_dir}",
            f"paths.data_dir={cache_dir}",
            "~logger",
            "~callbacks.rich_progress_bar",
            "~callbacks.model_summary",
            "++trainer.enable_progress_bar=false",
            *overrides,
        ],
        tmp_path,
    )


@pytest.mark.parametrize("peft", ["none", *sorted(TRAINABLE)])
def test_fast_dev_run_in_process_for_each_method(peft: str, tmp_path: Path, ml100k_dir: Path, cache_dir: Path):
    cfg = data_config(tmp_path, ml100k_dir, cache_dir, f"peft={peft}", "++trainer.fast_dev_run=true")
    metrics = run.train(cfg)
    params = metrics["params"]
    assert params["trainable"] == (params["total"] if peft == "none" else TRAINABLE[peft])
    # fast_dev_run takes one training step, at lr 0 (the first of 100 warm-up steps), then tests one batch: the test
    # metrics are those of the freshly built model (same seed) on the first test batch, recomputed here by hand
    datamodule, fresh = build_datamodule_and_system(cfg)
    datamodule.setup("test")
    batch = next(iter(datamodule.test_dataloader()))
    with torch.no_grad():
        logits = fresh.eval()(batch)
    labels = batch["labels"]
    assert metrics["test/logloss"] == pytest.approx(F.binary_cross_entropy_with_logits(logits, labels).item(), 1e-5)
    assert metrics["test/auc"] == pytest.approx(auc_by_hand(logits.tolist(), labels.long().tolist()), abs=1e-6)


def _quiet_trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        logger=False, enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False, **kwargs
    )


@pytest.fixture(scope="module")
def datamodule(ml100k_dir: Path, cache_dir: Path, tmp_path_factory) -> L.LightningDataModule:
    module = instantiate(data_config(tmp_path_factory.mktemp("dm"), ml100k_dir, cache_dir).data)
    module.setup()
    return module


class Systems:
    """Build CTR systems for one `peft` choice on the shared datamodule; each build is seeded (same backbone)."""

    def __init__(self, tmp_path: Path, ml100k_dir: Path, cache_dir: Path, *overrides: str):
        self.cfg = data_config(tmp_path, ml100k_dir, cache_dir, *overrides)

    def build(self, vocab_size: int) -> CTRSystem:
        L.seed_everything(self.cfg.seed)
        backbone = instantiate(self.cfg.model.backbone, vocab_size=vocab_size)
        return instantiate(self.cfg.task, backbone=apply_peft(backbone, instantiate(self.cfg.peft)))


@pytest.fixture(scope="module")
def full_checkpoint(datamodule, ml100k_dir: Path, cache_dir: Path, tmp_path_factory) -> Path:
    """A Trainer checkpoint of full fine-tuning (peft=none) after one step: what adapter-only ones are compared to."""
    out = tmp_path_factory.mktemp("full")
    system = Systems(out, ml100k_dir, cache_dir, "peft=none").build(len(datamodule.tokenizer))
    trainer = _quiet_trainer(max_steps=1, limit_val_batches=0)
    trainer.fit(system, datamodule=datamodule)
    trainer.save_checkpoint(out / "full.ckpt")
    return out / "full.ckpt"


@pytest.mark.parametrize("peft", ["lora", "adapter", "option", "prompt", "top_k_layers"])
def test_adapter_only_checkpoints_round_trip_and_refuse_another_backbone(
    peft: str, datamodule, full_checkpoint: Path, tmp_path: Path, ml100k_dir: Path, cache_dir: Path
):
    systems = Systems(tmp_path, ml100k_dir, cache_dir, f"peft={peft}", "task.scheduler.num_warmup_steps=0")
    vocab = len(datamodule.tokenizer)
    system = systems.build(vocab)
    trainer = _quiet_trainer(max_steps=3, limit_val_batches=0)
    trainer.fit(system, datamodule=datamodule)
    trainer.save_checkpoint(path := tmp_path / f"{peft}.ckpt")

    ckpt = torch.load(path, weights_only=True)
    trainable = {n for n, p in system.state_dict(keep_vars=True).items() if p.requires_grad}
    assert set(ckpt["state_dict"]) == trainable and ckpt[IDENTITY_KEY]["tensors"] > 0
    share = count_parameters(system.model)["trainable_pct"] / 100  # weights and Adam moments scale alike
    assert path.stat().st_size < (1.5 * share + 0.01) * full_checkpoint.stat().st_size  # lora ~23 %, option ~1 %
    assert IDENTITY_KEY not in torch.load(full_checkpoint, weights_only=True)  # full fine-tuning: a full checkpoint

    batch = next(iter(datamodule.test_dataloader()))
    system.eval()
    fresh = systems.build(vocab)  # the same random backbone, untrained PEFT weights
    restored = CTRSystem.load_from_checkpoint(path, backbone=fresh.model.backbone).eval()
    with torch.no_grad():
        assert not torch.equal(fresh.eval()(batch), system(batch))
        assert torch.equal(restored(batch), system(batch))
    via_trainer = systems.build(vocab)  # the Trainer's restore path (test / validate / resume)
    _quiet_trainer(limit_val_batches=1).validate(via_trainer, datamodule=datamodule, ckpt_path=path)
    with torch.no_grad():
        assert torch.equal(via_trainer.eval()(batch), system(batch))

    tampered = systems.build(vocab)
    with torch.no_grad():
        next(p for p in tampered.parameters() if not p.requires_grad)[0].add_(1e-3)
    with pytest.raises(BackboneMismatchError, match=f"checkpoint {path}: .*differs \\(frozen weights\\)"):
        CTRSystem.load_from_checkpoint(path, backbone=tampered.model.backbone)
    with pytest.raises(BackboneMismatchError, match=f"checkpoint {path}: "):
        _quiet_trainer(limit_val_batches=1).validate(tampered, datamodule=datamodule, ckpt_path=path)


def test_resume_from_an_adapter_only_checkpoint(datamodule, tmp_path: Path, ml100k_dir: Path, cache_dir: Path):
    systems = Systems(tmp_path, ml100k_dir, cache_dir, "peft=adapter")
    first = _quiet_trainer(max_steps=2, limit_val_batches=0)
    first.fit(systems.build(len(datamodule.tokenizer)), datamodule=datamodule)
    first.save_checkpoint(path := tmp_path / "step2.ckpt")
    resumed = _quiet_trainer(max_steps=4, limit_val_batches=0)
    resumed.fit(systems.build(len(datamodule.tokenizer)), datamodule=datamodule, ckpt_path=path)
    assert resumed.global_step == 4


@pytest.mark.parametrize("peft, lr, steps", [("option", 1e-2, 25), ("adapter", 1e-3, 120)])
def test_loss_drops_when_overfitting_a_batch(
    peft: str, lr: float, steps: int, datamodule, tmp_path: Path, ml100k_dir: Path, cache_dir: Path
):
    system = Systems(tmp_path, ml100k_dir, cache_dir, f"peft={peft}").build(len(datamodule.tokenizer))
    batch = next(iter(datamodule.train_dataloader()))  # seeded shuffle: the same batch every run
    optimizer = torch.optim.AdamW([p for p in system.parameters() if p.requires_grad], lr=lr)
    losses = []
    for _ in range(steps):
        loss = F.binary_cross_entropy_with_logits(system(batch), batch["labels"])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    rate = batch["labels"].mean()
    constant = float(-(rate * rate.log() + (1 - rate) * (1 - rate).log()))  # the best loss of a constant score
    assert losses[0] > 0.6 and losses[-1] < 0.8 * losses[0]
    assert losses[-1] < constant - 0.05  # below any constant score: more than the head's biases learned
    if peft == "adapter":  # the trained adapters carry part of the fit: back at the identity, the loss rises
        with torch.no_grad():
            for adapter in (m for m in system.modules() if isinstance(m, BottleneckAdapter)):
                adapter.up.weight.zero_()
                adapter.up.bias.zero_()
            reset = float(F.binary_cross_entropy_with_logits(system(batch), batch["labels"]))
        assert reset > losses[-1] + 0.05
