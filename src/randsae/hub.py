"""The Hugging Face hub, cache first: what randsae loads by a hub name (a model, its tokenizer, a released SAE)
comes from the local Hugging Face cache when it is there — the network untouched — and only otherwise from the
hub, after one short probe that turns an unreachable hub into one sentence instead of the client's minute of
retries."""

from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

from randsae.errors import BadInput

HUB_CHECK_SECONDS = 5.0


@contextmanager
def offline():
    """The hub client held to its local cache (what `local_files_only=True` does, for callers that take no
    such option, e.g. SAELens's loaders)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def cache_first(local: bool, load: Callable[..., Any], name: str, kind: str = "model",
                otherwise: str = "give a local directory or a .gguf file") -> Any:
    """`load(**options)` (a `from_pretrained`): a local directory as it is; a hub name from the local Hugging
    Face cache when it is there (`load(local_files_only=True)`), else downloaded — and when the hub cannot be
    reached, one sentence at once naming the `kind` of thing and what to do `otherwise`."""
    if local:
        return load()
    try:
        return load(local_files_only=True)
    except OSError:
        pass
    require_hub(f"{kind} {name!r} is not in the local Hugging Face cache",
                f"download it where there is a network, or {otherwise}")
    return load()


def require_hub(subject: str, otherwise: str) -> None:
    """The hub can be reached, found by one short probe — or one sentence, "`subject` and the hub cannot be reached
    (or HF_HUB_OFFLINE is set); `otherwise`", at once instead of the client's minute of retries."""
    import os

    import httpx
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        raise BadInput(f"{subject} and HF_HUB_OFFLINE is set; {otherwise}.")
    if os.environ.get("HF_DATASETS_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise BadInput(f"{subject} and HF_DATASETS_OFFLINE is set; {otherwise}.")
    try:
        httpx.head(constants.ENDPOINT, timeout=HUB_CHECK_SECONDS)
    except httpx.HTTPError:
        raise BadInput(f"{subject} and the hub ({constants.ENDPOINT}) cannot be reached; {otherwise}.") from None
