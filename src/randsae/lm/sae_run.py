"""Reading an SAE run's directory — what `lm train` writes, or SAEs of other tools laid out as it reads them: the
layers it holds, the activations' source it records, its arm's name, its training settings. Every command that
takes `--sae` reads a run through these."""

import re
from dataclasses import dataclass
from pathlib import Path

from randsae.errors import BadInput
from randsae.io import check_fields, read_json
from randsae.sae.dictionaries import arm_name


def layer_directory(out: Path, layer: int) -> Path:
    return out / f"layer.{layer}"


def trained_layers(sae_dir: Path) -> dict[int, Path]:
    """{layer: its SAE directory} of a run, for every layer whose weights were saved."""
    layers = {}
    for path in Path(sae_dir).glob("layer.*"):
        if (path / "sae_weights.safetensors").is_file() and path.name.split(".", 1)[1].isdigit():
            layers[int(path.name.split(".", 1)[1])] = path
    return dict(sorted(layers.items()))


def foreign_layers(sae_dir: Path, layers: str) -> dict[int, Path]:
    """{layer: SAE directory} of SAEs that `lm train` did not write: a sparsify folder of hookpoint folders
    named `<blocks>.<i>` (as `randsae export` and sparsify write them), or one SAE directory (SAELens,
    sparsify or randsae), whose block its cfg.json's hook names, or `layers` where it names none (the two must
    agree where both do)."""
    sae_dir = Path(sae_dir)
    if (sae_dir / "cfg.json").is_file():
        block = hooked_block(read_json(sae_dir / "cfg.json"), sae_dir)
        if layers.isdigit():
            if block is not None and block != int(layers):
                raise BadInput(f"the SAE in {sae_dir} reads block {block}'s output (its hook, "
                               f"{hook_name(read_json(sae_dir / 'cfg.json'))}), not block {layers}'s; give "
                               f"--layers {block}.")
            return {int(layers): sae_dir}
        if block is None:
            raise BadInput(f"{sae_dir} is a single SAE whose cfg.json names no hook; say which block's output it "
                           "reads with --layers N.")
        return {block: sae_dir}
    found = {}
    for path in sae_dir.iterdir() if sae_dir.is_dir() else []:
        suffix = path.name.rsplit(".", 1)[-1]
        if (path / "cfg.json").is_file() and "." in path.name and suffix.isdigit():
            found[int(suffix)] = path
    if not found:
        raise FileNotFoundError(f"{sae_dir / 'config.json'} does not exist; give a directory written by "
                                "`randsae lm train`, a sparsify folder of hookpoints, or one SAE directory.")
    return dict(sorted(found.items()))


# the hook names that mean a block's output, randsae's layer i: TransformerLens's and the module names
BLOCK_OUTPUT = re.compile(r"^(?:blocks\.(\d+)\.hook_resid_post|(?:[\w.]*\.)?(?:layers|h)\.(\d+))$")
BLOCK_INPUT = re.compile(r"^blocks\.(\d+)\.hook_resid_pre$")  # block i's input: block i − 1's output
READ_HOOKS = ("a block's output (blocks.N.hook_resid_post, model.layers.N) or input (blocks.N.hook_resid_pre, "
              "N ≥ 1)")


def hook_name(cfg: dict) -> str | None:
    """The hook an SAE's cfg.json names (SAELens's `metadata.hook_name` or `hook_name`), or None."""
    metadata = cfg["metadata"] if isinstance(cfg.get("metadata"), dict) else {}
    hook = metadata.get("hook_name") or cfg.get("hook_name")
    return hook if isinstance(hook, str) and hook else None


def hooked_block(cfg: dict, where: Path | str = "the SAE") -> int | None:
    """The block whose output an SAE reads, by the hook its cfg.json names: a block's output as it is, block i's
    input (`resid_pre`, i ≥ 1) as block i − 1's output, which is the same tensor. None where it names no hook;
    one sentence for a hook randsae does not hook (attention or MLP outputs, `resid_mid`, the embeddings)."""
    hook = hook_name(cfg)
    if hook is None:
        return None
    output, block_input = BLOCK_OUTPUT.match(hook), BLOCK_INPUT.match(hook)
    if output:
        return int(output.group(1) or output.group(2))
    if block_input and int(block_input.group(1)) >= 1:
        return int(block_input.group(1)) - 1
    raise BadInput(f"the SAE in {where} reads {hook}, which randsae does not hook; it reads SAEs of {READ_HOOKS}.")


def read_source(sae_dir: Path) -> dict:
    """The activations' source recorded by a run (OUT/config.json), checked."""
    path = Path(sae_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; give a directory written by `randsae lm train`.")
    source = read_json(path, {"source": dict})["source"]
    check_fields(source, {"model": str, "variant": dict}, f"{path} (source)")
    check_fields(source["variant"], {"variant": str, "seed": int}, f"{path} (source.variant)")
    return source


def arm_of(sae_dir: Path, source: dict) -> str:
    """The name the tables give a run's SAEs: the variant, and a random dictionary after a `+`."""
    return arm_name(source["variant"]["variant"], read_train_settings(sae_dir).get("dictionary", "trained"))


def read_train_settings(sae_dir: Path) -> dict:
    """The training settings a run recorded (OUT/config.json "train"); {} for SAEs randsae did not train."""
    path = Path(sae_dir) / "config.json"
    recorded = read_json(path) if path.is_file() else {}
    if "train" in recorded:  # a sparsify export records the source and not how its SAEs were trained
        check_fields(recorded, {"train": dict}, path)
    return recorded.get("train", {})


@dataclass(frozen=True)
class InputConventions:
    """What a released SAE's cfg.json says about the activations it was trained on (SAELens's fields, in its
    metadata or, before SAELens 6, at the top level): contexts beginning with BOS or not, their length, and a
    normalisation of each activation before encoding. None where it does not say."""
    prepend_bos: bool | None = None
    context_size: int | None = None
    normalization: str = "none"

    def describe(self) -> str:
        bos = None if self.prepend_bos is None else "beginning with BOS" if self.prepend_bos else "without BOS"
        said = [f"contexts of {self.context_size} tokens" if self.context_size else None, bos,
                f"activations normalised ({self.normalization})" if self.normalization != "none" else None]
        return ", ".join(s for s in said if s) or "nothing about its inputs"


def input_conventions(cfg: dict, where: Path | str = "the SAE") -> InputConventions:
    """The input conventions an SAE's cfg.json records, checked."""
    metadata = cfg["metadata"] if isinstance(cfg.get("metadata"), dict) else {}

    def field(name: str):
        return metadata.get(name, cfg.get(name))

    bos, size, norm = field("prepend_bos"), field("context_size"), cfg.get("normalize_activations") or "none"
    if bos is not None and not isinstance(bos, bool):
        raise BadInput(f"{where}: prepend_bos must be true or false, not {bos!r}.")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 2):
        raise BadInput(f"{where}: context_size must be a whole number of at least 2, not {size!r}.")
    if not isinstance(norm, str):
        raise BadInput(f"{where}: normalize_activations must be a name, not {norm!r}.")
    return InputConventions(bos, size, norm)
