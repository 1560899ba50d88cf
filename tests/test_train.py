"""Training end to end on a fixture: CLI runs, learning, determinism, checkpoints, resume, DDP, W&B offline."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torchmetrics.functional.classification import binary_auroc

import run
from m6rec.build import build_datamodule_and_system
from m6rec.peft import apply_peft
from m6rec.systems.ctr import CTRSystem
from tests.helpers import ROOT, auc_by_hand, compose_config, experiment_data, run_cli

FAST = ["experiment=ctr_lora", "logger=csv", "data.batch_size=32"]


def _data(ml100k_dir: Path, tmp_path: Path) -> list[str]:
    return [f"data.root={ml100k_dir}", f"paths.data_dir={tmp_path / 'cache'}"]


def _only_run_dir(tmp_path: Path, pattern: str = "logs/ctr_lora/runs/*") -> Path:
    dirs = sorted(tmp_path.glob(pattern))
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_fast_dev_run_from_the_cli_writes_metrics_and_the_resolved_config(tmp_path: Path, ml100k_dir: Path):
    run_cli([*FAST, *_data(ml100k_dir, tmp_path), "++trainer.fast_dev_run=true"], tmp_path)
    out = _only_run_dir(tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["data"]["interactions"] == 320
    resolved = (out / "config_resolved.yaml").read_text()
    assert f"root: {ml100k_dir}" in resolved and "${" not in resolved
    # fast_dev_run: one training step at lr 0 (the first warm-up step), then one test batch; so the model rebuilt
    # from config_resolved.yaml alone scores that batch to the run's test metrics
    datamodule, system = build_datamodule_and_system(OmegaConf.load(out / "config_resolved.yaml"))
    datamodule.setup("test")
    # LoRA r=16 on the two 128-d blocks' c_attn, c_proj, c_fc, mlp.c_proj (65,536) + head (129) + the embedding table
    assert metrics["params"]["trainable"] == 65665 + 128 * len(datamodule.tokenizer)
    batch = next(iter(datamodule.test_dataloader()))
    with torch.no_grad():
        logits = system.eval()(batch)
    assert metrics["test/auc"] == pytest.approx(auc_by_hand(logits.tolist(), batch["labels"].long().tolist()), abs=1e-6)
    assert "commit" in json.loads((out / "environment.json").read_text())["git"]


@pytest.mark.slow  # a CLI multirun of two jobs: the slow tier, still run by CI
def test_multirun_gives_each_job_its_own_directory(tmp_path: Path, ml100k_dir: Path):
    run_cli(["-m", *FAST, *_data(ml100k_dir, tmp_path), "peft=lora,none", "++trainer.fast_dev_run=true"], tmp_path)
    jobs = sorted(tmp_path.glob("logs/ctr_lora/multiruns/*/*/metrics.json"))
    assert len(jobs) == 2
    lora, full = (json.loads(p.read_text())["params"] for p in jobs)
    assert lora["trainable"] == 65665 and full["trainable"] == full["total"] == lora["total"] - 65665 + 129


@pytest.mark.slow  # a CLI multirun with W&B: the slow tier, still run by CI
def test_wandb_offline_one_run_per_job_sharing_the_sweep_group(tmp_path: Path, ml100k_dir: Path):
    import yaml

    run_cli(
        [
            "-m",
            "experiment=ctr_lora",
            "logger=wandb",
            *_data(ml100k_dir, tmp_path),
            "peft=lora,none",
            "++trainer.fast_dev_run=true",
        ],
        tmp_path,
        env={"WANDB_MODE": "offline"},
    )
    jobs = sorted(p.parent for p in tmp_path.glob("logs/ctr_lora/multiruns/*/*/metrics.json"))
    assert len(jobs) == 2
    sweep = jobs[0].parent.name
    for job, peft in zip(jobs, ("lora", "none"), strict=True):
        runs = list((job / "wandb").glob("offline-run-*"))
        assert len(runs) == 1  # wandb.finish() per job: one run each
        wandb_cfg = yaml.safe_load((job / "config_resolved.yaml").read_text())["logger"]["wandb"]
        assert wandb_cfg["group"] == f"ctr_lora-{sweep}"
        assert wandb_cfg["name"] == f"peft={peft},trainer.fast_dev_run=True"  # paths and data.root left out
        assert wandb_cfg["job_type"] == "ctr" and wandb_cfg["tags"] == ["ml100k", "ctr", "lora", "id_tokens"]
        record = next(runs[0].glob("run-*.wandb")).read_bytes()  # the offline run's protobuf log
        assert f"ctr_lora-{sweep}".encode() in record and f"peft={peft},".encode() in record


def _cfg(tmp_path: Path, ml100k_dir: Path, *overrides: str):
    return compose_config(
        [
            *FAST,
            *_data(ml100k_dir, tmp_path),
            "~logger",
            "~callbacks.rich_progress_bar",
            "~callbacks.model_summary",
            *overrides,
        ],
        tmp_path,
    )


def _system(cfg, datamodule):
    backbone = instantiate(cfg.model.backbone, vocab_size=len(datamodule.tokenizer))
    return instantiate(cfg.task, backbone=apply_peft(backbone, instantiate(cfg.peft)))


def test_loss_drops_when_overfitting_a_batch(tmp_path: Path, ml100k_dir: Path):
    cfg = _cfg(tmp_path, ml100k_dir, "peft=none", "task.optimizer.lr=3e-3", "task.scheduler.num_warmup_steps=0")
    L.seed_everything(0)
    datamodule = instantiate(cfg.data)
    system = _system(cfg, datamodule)
    losses: list[float] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(
        max_epochs=40,
        overfit_batches=1,
        callbacks=[Record()],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    trainer.fit(system, datamodule=datamodule)
    assert losses[0] > 0.6 and sum(losses[-5:]) / 5 < 0.5 * losses[0]


def test_same_seed_same_metrics_and_best_checkpoint_round_trips(tmp_path: Path, ml100k_dir: Path):
    results = []
    for attempt in range(2):
        cfg = _cfg(tmp_path / str(attempt), ml100k_dir, "trainer.max_epochs=2", "seed=7")
        results.append(run.train(cfg))
    keys = ["val/auc", "test/auc", "test/logloss", "test/acc"]
    assert [results[0][k] for k in keys] == [results[1][k] for k in keys]  # bit-identical on CPU

    # the best checkpoint (adapter-only: LoRA freezes the backbone) reloads into a freshly built system of the same
    # seed (the random backbone it was trained on) to bit-identical predictions, by both of Lightning's load paths
    cfg = _cfg(tmp_path / "0", ml100k_dir, "seed=7")
    datamodule, fresh = build_datamodule_and_system(cfg)
    datamodule.setup()
    batch = next(iter(datamodule.test_dataloader()))
    restored = CTRSystem.load_from_checkpoint(results[0]["best_checkpoint"], backbone=fresh.model.backbone)
    restored.eval()
    ckpt = torch.load(results[0]["best_checkpoint"], weights_only=True)
    _, trained = build_datamodule_and_system(cfg)
    trained.on_load_checkpoint(ckpt)
    trained.load_state_dict(ckpt["state_dict"])
    trained.eval()
    with torch.no_grad():
        assert torch.equal(restored(batch), trained(batch))
        assert not torch.equal(build_datamodule_and_system(cfg)[1].eval()(batch), trained(batch))


def test_resume_continues_from_the_last_checkpoint(tmp_path: Path, ml100k_dir: Path):
    # the text-only recipe, whose second epoch sets a new best on this fixture, so last.ckpt is that epoch's (with the
    # default ID-token recipe it does not, and last.ckpt is written at the end of training, "epoch" 2)
    text = ("data=ml100k", "peft=lora", "model.backbone.config.n_embd=64")
    first = run.train(_cfg(tmp_path / "a", ml100k_dir, *text, "trainer.max_epochs=1"))
    last = Path(first["best_checkpoint"]).with_name("last.ckpt")
    steps_per_epoch = torch.load(last, weights_only=False)["global_step"]
    assert steps_per_epoch == 8  # 256 training rows / batch 32
    run.train(_cfg(tmp_path / "b", ml100k_dir, *text, "trainer.max_epochs=2", f"ckpt_path={last}"))
    resumed = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=False)
    assert resumed["global_step"] == 2 * steps_per_epoch and resumed["epoch"] == 1
    # train=false tests the given checkpoint: the same numbers as the run that produced it
    tested = run.train(_cfg(tmp_path / "c", ml100k_dir, *text, "train=false", f"ckpt_path={first['best_checkpoint']}"))
    assert tested["test/auc"] == first["test/auc"] and tested["test/logloss"] == first["test/logloss"]


@pytest.mark.slow  # two DDP processes through the CLI: the slow tier, still run by CI
def test_ddp_on_cpu_two_ranks_agree_and_score_each_test_sample_once(tmp_path: Path, ml100k_dir: Path):
    dump = tmp_path / "ranks"
    dump.mkdir()
    run_cli(
        [
            *FAST,
            *_data(ml100k_dir, tmp_path),
            "trainer=ddp_cpu",
            "trainer.max_epochs=1",
            "eval.dump_scores=true",
            "+callbacks.dump._target_=tests.helpers.DumpTestMetrics",
            f"+callbacks.dump.out_dir={dump}",
        ],
        tmp_path,
    )
    ranks = [json.loads((dump / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world"] == 2 for r in ranks)
    assert ranks[0]["metrics"] == ranks[1]["metrics"] and "test/auc" in ranks[0]["metrics"]
    out = _only_run_dir(tmp_path)
    metrics = json.loads((out / "metrics.json").read_text())
    assert ranks[0]["seen"] + ranks[1]["seen"] == metrics["data"]["test_size"] == 32  # no padded duplicates
    assert metrics["test/auc"] == pytest.approx(ranks[0]["metrics"]["test/auc"])
    scores = pq.read_table(out / "scores_test.parquet").to_pydict()  # both ranks' rows, merged by rank 0
    assert sorted(p.name for p in out.glob("scores_test*")) == ["scores_test.parquet"] and len(scores["score"]) == 32
    auc = binary_auroc(torch.tensor(scores["score"]), torch.tensor(scores["label"]).long())
    assert auc.item() == pytest.approx(metrics["test/auc"], abs=1e-6)


@pytest.mark.slow  # two Optuna sweeps through the CLI: the slow tier, still run by CI
def test_optuna_search_runs_and_resumes_its_sqlite_study(tmp_path: Path, ml100k_dir: Path):
    import optuna

    args = [
        "-m",
        "hparams_search=ctr_optuna",
        *FAST,
        *_data(ml100k_dir, tmp_path),
        "trainer.max_epochs=1",
        "~callbacks.early_stopping",
        "hydra.sweeper.n_trials=2",
        "hydra.sweeper.sampler.n_startup_trials=1",
    ]
    for _ in range(2):
        run_cli(args, tmp_path)
    study = optuna.load_study(study_name="ctr_lora_optuna", storage=f"sqlite:///{tmp_path / 'logs' / 'optuna.db'}")
    trials = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE  # optimized_mode=max (val/auc)
    assert len(trials) == 4 and len({t.params["task.optimizer.lr"] for t in trials}) == 4
    assert all(set(t.params) == {"task.optimizer.lr", "peft.r", "peft.lora_dropout"} for t in trials)
    jobs = [json.loads(p.read_text()) for p in tmp_path.glob("logs/ctr_lora/multiruns/*/*/metrics.json")]
    assert sorted(t.value for t in trials) == sorted(job["val/auc"] for job in jobs)  # each job's best val/auc


@pytest.mark.slow  # a joblib sweep through the CLI: the slow tier, still run by CI
def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path: Path, ml100k_dir: Path):
    run_cli(
        [
            "-m",
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            *FAST,
            *_data(ml100k_dir, tmp_path),
            "seed=0,1",
            "++trainer.fast_dev_run=true",
        ],
        tmp_path,
    )
    jobs = sorted(tmp_path.glob("logs/ctr_lora/multiruns/*/*/metrics.json"))
    assert len(jobs) == 2
    assert len({json.loads(p.read_text())["test/logloss"] for p in jobs}) == 2  # different seeds, different runs


@pytest.mark.slow  # a CLI multirun: the slow tier, still run by CI
def test_a_crashed_job_is_reported_and_the_sweep_goes_on(tmp_path: Path, ml100k_dir: Path):
    from m6rec.compare import collect_runs

    proc = run_cli(
        ["-m", *FAST, *_data(ml100k_dir, tmp_path), "data.max_length=5,64", "++trainer.fast_dev_run=true"],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 1 and "data.max_length=5 is too small" in proc.stderr
    sweep = next(tmp_path.glob("logs/ctr_lora/multiruns/*"))
    assert not (sweep / "0" / "metrics.json").exists() and (sweep / "1" / "metrics.json").exists()
    finished, failed = collect_runs([sweep])
    assert len(finished) == 1 and [p.name for p in failed] == ["0"]


@pytest.mark.slow  # two CLI runs with W&B: the slow tier, still run by CI
def test_a_run_directory_reproduces_its_run(tmp_path: Path, ml100k_dir: Path):
    run_cli([*FAST, "logger=wandb", *_data(ml100k_dir, tmp_path), "trainer.max_epochs=1", "seed=3"], tmp_path)
    original = _only_run_dir(tmp_path)
    again = tmp_path / "again"
    run_cli(["--config-path", str(original / ".hydra"), "--config-name", "config", f"hydra.run.dir={again}"], tmp_path)
    first, second = (json.loads((d / "metrics.json").read_text()) for d in (original, again))
    assert second["test/auc"] == first["test/auc"] and second["val/auc"] == first["val/auc"]
    import yaml

    configs = [
        yaml.safe_load((d / "config_resolved.yaml").read_text().replace(str(d), "<run dir>")) for d in (original, again)
    ]
    assert configs[1]["logger"]["wandb"].pop("name") == "ctr_lora"  # no command-line overrides this time
    assert configs[0]["logger"]["wandb"].pop("name") == "data.batch_size=32,trainer.max_epochs=1,seed=3"
    assert configs[1] == configs[0]  # everything else, job_type and group included, is the same


@pytest.mark.slow  # nine CLI runs (~3 min): the slow tier, still run by CI
@pytest.mark.parametrize("experiment", sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml")))
def test_every_experiment_fast_dev_runs(experiment: str, tmp_path: Path, ml100k_dir: Path):
    cfg = compose_config([f"experiment={experiment}"], tmp_path)
    run_cli(
        [
            f"experiment={experiment}",
            "logger=csv",
            *experiment_data(cfg, ml100k_dir, tmp_path),
            "++trainer.fast_dev_run=true",
        ],
        tmp_path,
    )
    metrics = json.loads(next(tmp_path.glob("logs/*/runs/*/metrics.json")).read_text())
    assert np.isfinite(metrics["test/" + cfg.optimized_metric.split("/", 1)[1]])  # the monitored metric, on test


@pytest.mark.slow  # a submitit sweep through the CLI: the slow tier, still run by CI
def test_submitit_local_launcher_runs_each_job(tmp_path: Path, ml100k_dir: Path):
    run_cli(
        [
            "-m",
            "hydra/launcher=submitit_local",
            *FAST,
            *_data(ml100k_dir, tmp_path),
            "seed=0,1",
            "++trainer.fast_dev_run=true",
        ],
        tmp_path,
    )
    jobs = sorted(tmp_path.glob("logs/ctr_lora/multiruns/*/*/metrics.json"))
    assert [p.parent.name for p in jobs] == ["0", "1"]


@pytest.mark.slow  # a CLI run with W&B and CSV: the slow tier, still run by CI
def test_two_loggers_at_once(tmp_path: Path, ml100k_dir: Path):
    run_cli(
        ["experiment=ctr_lora", "logger=[wandb,csv]", *_data(ml100k_dir, tmp_path), "trainer.max_epochs=1"],
        tmp_path,
        env={"WANDB_MODE": "offline"},
    )  # fast_dev_run would silence the loggers
    out = _only_run_dir(tmp_path)
    assert len(list((out / "wandb").glob("offline-run-*"))) == 1
    assert "test/auc" in (out / "csv" / "version_0" / "metrics.csv").read_text()
