"""Released SAEs by name, resolved to a local directory in a layout `randsae.sae.files` reads:

- `sae-lens:RELEASE/ID` — an SAE of SAELens's pretrained registry (the `pretrained_saes.yaml` that ships with
  the package: Gemma Scope, the Pythia and GPT-2 releases, …), loaded by SAELens's own loader for its
  release (which converts the release's files, e.g. Gemma Scope's params.npz), and saved once in SAELens's
  layout under randsae's cache (`$RANDSAE_CACHE/saes/`).
- `hf:REPO[/PATH]` — a folder of a Hugging Face repository (one SAE, or a sparsify folder of hookpoints),
  used where the hub client keeps it.

Both read the local Hugging Face cache first and touch the network only for what is not there
(`randsae.hub.cache_first`); a name that is unknown, or not cached with the hub out of reach, is one sentence.
"""

import difflib
from pathlib import Path

from randsae.errors import BadInput
from randsae.hub import cache_first, offline
from randsae.io import cache_dir

SAE_LENS, HF = "sae-lens:", "hf:"


def resolve(spec: str) -> Path:
    """The local directory of `spec`: a name as above, or a path as it is."""
    if spec.startswith(SAE_LENS):
        return _sae_lens(spec.removeprefix(SAE_LENS))
    if spec.startswith(HF):
        return _hub_folder(spec.removeprefix(HF))
    return Path(spec)


def _registry() -> dict:
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    except ImportError:
        raise BadInput("sae-lens: names need SAELens (pip install sae-lens, or randsae's interop "
                       "extra).") from None
    return get_pretrained_saes_directory()


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f"; did you mean {', '.join(close)}?" if close else "."


def lookup(name: str) -> tuple[str, str, str, str]:
    """(release, id, repository, folder) of `RELEASE/ID` in SAELens's registry, or one sentence."""
    release, _, sae_id = name.partition("/")
    registry = _registry()
    if release not in registry:
        raise BadInput(f"sae-lens:{name}: {release!r} is not a release in SAELens's registry"
                       f"{_suggest(release, list(registry))}")
    entry = registry[release]
    if not sae_id:
        examples = ", ".join(list(entry.saes_map)[:3])
        raise BadInput(f"sae-lens:{name} names no SAE; give sae-lens:{release}/ID, e.g. an ID of {examples}.")
    if sae_id not in entry.saes_map:
        raise BadInput(f"sae-lens:{name}: release {release} has no SAE {sae_id!r}"
                       f"{_suggest(sae_id, list(entry.saes_map))}")
    return release, sae_id, entry.repo_id, entry.saes_map[sae_id]


def _sae_lens(name: str) -> Path:
    release, sae_id, repo, folder = lookup(name)
    target = cache_dir("saes", "sae-lens", release, *sae_id.split("/"))
    if (target / "sae_weights.safetensors").is_file():
        return target

    def load(local_files_only: bool = False):
        from sae_lens import SAE

        if not local_files_only:
            return SAE.from_pretrained(release, sae_id, device="cpu")
        with offline():
            return SAE.from_pretrained(release, sae_id, device="cpu")

    sae = cache_first(False, load, f"sae-lens:{name}", kind="SAE",
                      otherwise=f"give its directory (the files of {repo}/{folder})")
    sae.save_model(target)  # SAELens's own layout, written by SAELens
    return target


def _hub_folder(name: str) -> Path:
    parts = name.strip("/").split("/")
    if len(parts) < 2 or not all(parts[:2]):
        raise BadInput(f"hf:{name} is not hf:OWNER/REPO[/PATH].")
    repo, folder = "/".join(parts[:2]), "/".join(parts[2:])
    from huggingface_hub import snapshot_download

    patterns = [f"{folder}/**"] if folder else None
    snapshot = cache_first(False, lambda **kw: snapshot_download(repo, allow_patterns=patterns, **kw),
                           f"hf:{name}", kind="SAE", otherwise="give its local directory")
    path = Path(snapshot) / folder
    if not path.is_dir():
        raise BadInput(f"hf:{name}: {repo} has no folder {folder!r}.")
    return path
