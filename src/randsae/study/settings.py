"""A study's settings (OUT/config.json): `BaselineSettings`, each declared once with its help (the flags come
from it), the presets, what the preflight found (`Preflight`), and the settings a unit's stages derive from them
(its SAEs' training, the judge, the scorers). The bottom of `randsae.study`: nothing here imports the stages."""

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from randsae.autointerp.clients import JudgeSettings
from randsae.autointerp.scorers import SCORERS
from randsae.config import EVAL_TOKENS, FIT_TOKENS, parse_count
from randsae.errors import BadInput, check_seed
from randsae.experiments.lm_autointerp import AutointerpSettings
from randsae.experiments.lm_probe import ProbeSettings
from randsae.lm.examples import ExampleSettings
from randsae.lm.text import PAPER_CORPUS, PREPEND_BOS_HELP
from randsae.lm.variants import VARIANTS
from randsae.sae.dictionaries import DEFAULT_CONE, arm_name, check_dictionary, split_arm
from randsae.settings import setting
from randsae.study.verdict import VerdictSettings

if TYPE_CHECKING:
    from randsae.study.shapes import ModelShape

TWIN_SAES = ("same", "topk")
# what the trainer trains (randsae.training.trainer.ARCHITECTURES; the study cannot import it at module level)
TRAINED_ARCHITECTURES = ("topk", "jumprelu", "batchtopk", "matryoshka")
# a user's SAE (its architecture as SAELens names it) → the architecture its twins train with --twin-sae same
TWIN_OF = {"topk": "topk", "jumprelu": "jumprelu", "batchtopk": "batchtopk", "matryoshka_batchtopk": "matryoshka"}
STUDY = "randsae baseline"


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _latent_tokens(text: str) -> int | str:
    return "cache" if text.strip() == "cache" else parse_count(text)


@dataclass
class BaselineSettings:
    """Every setting of a study (OUT/config.json), each declared once with its help: the presets fill them,
    a --config file overrides the preset, flags override both."""
    model: str = setting("smollm2", help="smollm2 (embedded), a .gguf file, a directory or a hub name")
    revision: str | None = setting(None, help="hub revision of the trained model", shown="the newest")
    variants: list[str] = setting(default_factory=lambda: list(VARIANTS), parse=_names,
                                  help=f"comma list of {', '.join(VARIANTS)}", shown="all five")
    layers: str = setting("all", help="'all', 'paper' (every layer to 410m parameters, every 2nd to 1b, every 4th "
                                      "above) or a comma list")
    dataset: str = setting("shakespeare", help=(
        "shakespeare (embedded), a .txt/.jsonl file, a directory of a data set's files or a Hugging Face data set "
        "(one that ships a loading script is read from its data files)"))
    dataset_config: str | None = setting(None, help="the data set's configuration", shown="none")
    text_column: str = setting("text", help="the data set's column of text")
    context_length: int = setting(256, help="tokens per context", shown="256, or your --sae's context size")
    prepend_bos: bool | None = setting(None, help=PREPEND_BOS_HELP, shown="as your --sae's cfg.json says; off "
                                                                          "otherwise")
    tokens: int = setting(100_000_000, parse=parse_count, help="training tokens per variant",
                          shown="100M")
    cache: bool | None = setting(None, help=(
        "cache every layer's activations and train from the cache (--cache), or train every layer on the fly "
        "from one pass of the model (--no-cache)"), shown="cache where the plan says the disk holds it")
    cache_dtype: str | None = setting(None, help="the activation cache's float type", shown=(
        "float16 (the paper's); bfloat16 for a bfloat16 model"))
    model_dtype: str = setting("float32", help=(
        "the float type the studied model is loaded in: float32, bfloat16 or float16; its block outputs reach the "
        "cache and the SAEs in it (the SAEs train and encode in float32)"))
    device_map: str | None = setting(None, help=(
        "split the studied model across devices (accelerate): auto (balanced over the visible GPUs) or a JSON "
        "file of module name → device (\"cpu\", \"disk\", 0, …); activations and evaluation run through the "
        "split model"), shown="none: the whole model on --device")
    k: int = setting(32, help="latents kept per token")
    expansion: int = setting(64, help="latents per input dimension")
    schedule: str = setting("budget", help="budget or paper, as `lm train --schedule`")
    recipe: str = setting("randsae", help="how every arm's SAEs are trained, as `lm train --recipe`: randsae, "
                                          "bussmann or sparsify (docs/choices.md \"Training recipes\")")
    batch_size: int | None = setting(None, help="tokens per optimiser step", shown="the budget rule")
    lr: float | None = setting(None, help="learning rate", shown="the budget rule")
    skip_positions: int = setting(0, help="as `lm train --skip-positions`")
    max_norm_ratio: float | None = setting(None, help="as `lm train --max-norm-ratio`", shown="none")
    eval_tokens: int = setting(EVAL_TOKENS, parse=parse_count, help="held-out tokens for the quality eval",
                               shown="64k")
    fit_tokens: int = setting(FIT_TOKENS, parse=parse_count, help=(
        "training tokens each arm's baselines (PCA-k, token lookup) are fitted on and its SAEs' training "
        "explained variance is measured on"))
    latent_tokens: int | None = setting(10_000_000, parse=_latent_tokens, help=(
        "tokens the latent records are drawn from, run on the fly after the training text, or 'cache': the "
        "training cache"), shown="10M")
    scorers: list[str] | None = setting(None, parse=_names, shown="all", help=(
        f"comma list of {', '.join([*SCORERS, *('probing', 'absorption')])}: the latent scorers, and the probing "
        "stage's k-sparse probing and first-letter absorption (no judge)"))
    # the stages' own settings, each a typed settings object with its flags: the example sets (the seed: each
    # unit's), the autointerp stage's (its scorers: the latent ones of `scorers`), the probes', the judge's
    examples: ExampleSettings = field(default_factory=ExampleSettings)
    autointerp: AutointerpSettings = field(default_factory=AutointerpSettings)
    probing: ProbeSettings = field(default_factory=ProbeSettings)
    judge: JudgeSettings = field(default_factory=lambda: JudgeSettings(llm="smollm2"))
    sae: str | None = setting(None, help=(
        "your SAEs as the trained arm: a directory (randsae, SAELens or sparsify; TopK, JumpReLU, Gated, "
        "BatchTopK, Matryoshka), sae-lens:RELEASE/ID (SAELens's registry) or hf:REPO/PATH; the twins get SAEs "
        "of the same size trained like yours (--twin-sae)"), shown="none")
    twin_sae: str = setting("same", help=(
        "how the twins' SAEs are trained beside yours (--sae): same (your architecture: JumpReLU to your SAE's "
        "measured L0, BatchTopK and Matryoshka with its k, TopK with its k) or topk (TopK, k = your SAE's "
        "measured L0)"))
    architecture: str = setting("topk", help="the SAEs every arm trains without --sae: topk (the paper's), "
                                             "jumprelu (to L0 = --k), batchtopk or matryoshka")
    seed: int = setting(0, help="seeds the variants, the contexts, the SAEs, the draws")
    seeds: int = setting(1, help=(
        "seeds per arm: seed s (counted from --seed) trains each arm's SAEs anew and draws each random twin "
        "anew (re-randomises, re-initialises, redraws the control's noise); with 1 a bootstrap over held-out "
        "tokens and latents stands in for the spread over seeds"))
    dictionaries: list[str] = setting(default_factory=lambda: ["trained"], parse=_names, help=(
        "comma list of the SAEs' dictionaries: trained, and random ones, each an arm of its own on the trained "
        "model: frozen-decoder, frozen-decoder-cov, soft-frozen-decoder, frozen-encoder (docs/choices.md "
        "\"Random dictionaries\")"), shown="trained")
    dictionaries_on_twins: bool = setting(False, help="give every random twin the random-dictionary arms too")
    dictionary_cone: float = setting(DEFAULT_CONE, help="as `lm train --dictionary-cone`")
    verdict: VerdictSettings = field(default_factory=VerdictSettings)
    device: str = setting("auto", help="auto, cpu or cuda")
    preset: str = "paper"

    def __post_init__(self) -> None:  # an invalid settings object cannot exist
        if self.cache_dtype is None:  # a bfloat16 model's activations stay bfloat16 end to end
            self.cache_dtype = "bfloat16" if self.model_dtype == "bfloat16" else "float16"
        self.validate()

    def validate(self) -> None:
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise BadInput(f"unknown variant {unknown[0]!r} in --variants; choose from {', '.join(VARIANTS)}.")
        if not self.variants or len(set(self.variants)) != len(self.variants):
            raise BadInput(f"--variants must name each variant once, not {','.join(self.variants)!r}.")
        if "trained" not in self.variants:
            raise BadInput("--variants must include trained: every random twin is compared with it.")
        if len(self.variants) < 2:
            raise BadInput("--variants needs at least one random twin beside trained.")
        for name in ("tokens", "eval_tokens", "fit_tokens", "k", "expansion", "context_length", "seeds"):
            if getattr(self, name) < 1:
                flag = "--" + name.replace("_", "-")
                raise BadInput(f"{flag} must be a positive integer, not {getattr(self, name)}.")
        check_seed(self.seed)
        from randsae.training.recipes import recipe
        from randsae.training.trainer import SCHEDULES

        recipe(self.recipe)
        if self.schedule not in SCHEDULES:
            raise BadInput(f"--schedule must be one of {', '.join(SCHEDULES)}, not {self.schedule!r}.")
        if self.twin_sae not in TWIN_SAES:
            raise BadInput(f"--twin-sae must be one of {', '.join(TWIN_SAES)}, not {self.twin_sae!r}.")
        if self.model_dtype not in ("float32", "bfloat16", "float16"):
            raise BadInput(f"--model-dtype must be float32, bfloat16 or float16, not {self.model_dtype!r}.")
        if self.architecture not in TRAINED_ARCHITECTURES:
            raise BadInput(f"--architecture must be one of {', '.join(TRAINED_ARCHITECTURES)}, not "
                           f"{self.architecture!r}.")
        if len(set(self.dictionaries)) != len(self.dictionaries):
            raise BadInput(f"--dictionaries must name each dictionary once, not {','.join(self.dictionaries)!r}.")
        for name in self.dictionaries:
            check_dictionary(name, self.dictionary_cone)
        self.verdict.validate()
        check_scorers(self)

    @property
    def random_dictionaries(self) -> list[str]:
        return [d for d in self.dictionaries if d != "trained"]


PRESETS = {
    # the embedded model, offline, minutes on 2 cores: what `make demo` runs (docs/results.md); contexts of 64
    # tokens: 500 of them at 32k tokens (125 of 256 let the step-0 arm learn its training contexts)
    "demo": {"model": "smollm2", "variants": ["trained", "rerandomized", "step0", "control"], "layers": "3,9",
             "cache": True,
             "tokens": 32_000, "context_length": 64, "expansion": 8, "eval_tokens": 3584, "latent_tokens": "cache",
             "examples": {"sample": 24, "min_examples": 20, "explainer_examples": 6, "test_examples": 10,
                          "non_activating": 10},
             # the judge (at chance here) explains and scores 2 latents a layer; token lookup and example
             # embedding score all 24
             "autointerp": {"explainer_tokens": 16, "calibration_windows": 5, "bootstrap": 200,
                            "judged_latents": 2},
             "judge": {"llm": "smollm2", "dtype": "auto"}},
    # docs/paper.md §2: R = 64, k = 32, 100M training tokens, every layer to 410m parameters (every 2nd to 1b,
    # every 4th above), a 10M-token latent cache, 100 latents, 40/100/100 example sets
    "paper": {"layers": "paper", "dataset": PAPER_CORPUS},
}


def text_conventions(s: "BaselineSettings") -> str:
    """How every arm's inputs were made (the report's "text" row): the text, the contexts (BOS first or not), and
    where that came from."""
    return (f"{s.dataset}, contexts of {s.context_length} tokens, " + ("each beginning with the BOS token" if
            s.prepend_bos else "no BOS token prepended") + (" (from the --sae SAEs' cfg.json where it says "
                                                            "and no flag did)" if s.sae else ""))


def settings_for(preset: str, overrides: dict) -> BaselineSettings:
    if preset not in PRESETS:
        raise BadInput(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}.")
    values = {**PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}, "preset": preset}
    if values.get("latent_tokens") == "cache":  # --latent-tokens cache: the examples come from the training cache
        values["latent_tokens"] = None
    verdict = {**PRESETS[preset].get("verdict", {}), **(overrides.get("verdict") or {})}
    values["verdict"] = VerdictSettings(**verdict) if isinstance(verdict, dict) else verdict
    for part in NESTED:
        values[part] = {**PRESETS[preset].get(part, {}), **(overrides.get(part) or {})}
    if overrides.get("judge") and "url" in overrides["judge"]:
        values["judge"] = overrides["judge"]  # a server replaces the local judge, not merged into it
    given_scorers = values["autointerp"].pop("scorers", None)  # a settings file's [autointerp] scorers
    if values.get("scorers") is None:
        values["scorers"] = given_scorers
    values["autointerp"]["scorers"] = latent_only(values["scorers"])  # what the autointerp stage scores
    values.update({part: cls(**values[part]) for part, cls in NESTED.items()})
    settings = BaselineSettings(**values)
    settings.validate()
    return settings


NESTED = {"examples": ExampleSettings, "autointerp": AutointerpSettings, "probing": ProbeSettings,
          "judge": JudgeSettings}  # the stages' settings inside a study's


def paper_layers(num_layers: int, parameters: float) -> list[int]:
    """docs/paper.md §2.2: every layer up to 410m parameters, every 2nd up to 1b, every 4th above."""
    step = 1 if parameters < 0.6e9 else 2 if parameters < 2e9 else 4
    return list(range(0, num_layers, step))


@dataclass
class Preflight:
    """What the checks before any work found: the layers to study and, with --sae, the SAEs' shape."""
    layers: list[int]
    d_model: int
    sae_layers: dict[int, str] = field(default_factory=dict)
    sae_k: int | None = None  # a TopK or BatchTopK SAE's
    sae_expansion: int | None = None
    sae_architecture: str | None = None  # SAELens's name: topk, jumprelu, gated, batchtopk, matryoshka_batchtopk
    sae_widths: list[int] | None = None  # a Matryoshka SAE's nested widths
    sae_normalization: str = "none"  # the per-token normalisation of their inputs (SAELens's layer_norm, …)
    shape: "ModelShape | None" = None  # the model's sizes (randsae.study.plan), for the plan


def train_config_for(s: BaselineSettings, check: Preflight, unit: str, architecture: str | None = None,
                     layer_l0: dict | None = None):
    """A unit's training settings (the architecture and per-layer L0 its twins match, where they do)."""
    from randsae.training.trainer import TopKTrainConfig

    given = {"batch_size": s.batch_size, "lr": s.lr}
    architecture, layer_l0 = architecture or s.architecture, layer_l0 or {}
    config = TopKTrainConfig(k=check.sae_k or s.k, expansion=check.sae_expansion or s.expansion,
                             architecture=architecture, layer_l0=layer_l0, matryoshka_widths=check.sae_widths,
                             recipe=s.recipe,
                             seed=s.seed + parse_unit(unit)[1], dictionary=split_arm(parse_unit(unit)[0])[1],
                             dictionary_cone=s.dictionary_cone, fit_tokens=s.fit_tokens,
                             input_normalization=check.sae_normalization,
                             skip_positions=s.skip_positions, max_norm_ratio=s.max_norm_ratio,
                             **{k: v for k, v in given.items() if v is not None})
    config.validate()
    return config, {k for k, v in given.items() if v is not None}


def judge_options(settings: BaselineSettings) -> dict:

    return dataclasses.replace(settings.judge, device=settings.device).options()


# --- the units: a variant at one seed ---------------------------------------------------------------------------

def study_units(s: BaselineSettings, index: int | None = None) -> list[str]:
    """`Study.units` of a study with these settings."""
    units = []
    for i in range(s.seeds) if index is None else [index]:
        for v in s.variants:
            if i and v == "trained" and s.sae is not None:
                continue
            units.append(unit_name(v, i))
            if v == "trained" or s.dictionaries_on_twins:
                units += [unit_name(arm_name(v, d), i) for d in s.random_dictionaries]
    return units


def unit_name(variant: str, index: int) -> str:
    """A study's unit of work: a variant at one seed — `rerandomized` (seed 0), `rerandomized/seed1`, …; its
    stages write under OUT/<unit>/."""
    return variant if index == 0 else f"{variant}/seed{index}"


def parse_unit(unit: str) -> tuple[str, int]:
    """(arm, seed index) of a unit; the arm is a variant, or a variant and a random dictionary (`split_arm`)."""
    variant, _, seed = unit.partition("/seed")
    return variant, int(seed or 0)


def base_unit(unit: str) -> str:
    """The unit whose activations a random-dictionary arm reads: its variant's at its seed."""
    arm, index = parse_unit(unit)
    return unit_name(split_arm(arm)[0], index)


# --- the scorers: the autointerp stage's (per latent) and the probing stage's (per layer, no judge) -------------

MEASURES = ("probing", "absorption")  # what --scorers may name beside the latent scorers: the probing stage's


def all_scorers() -> list[str]:
    return [*SCORERS, *MEASURES]


def study_scorers(s: BaselineSettings) -> list[str]:
    """The study's --scorers: as given, or every one (the latent scorers, probing and absorption)."""
    return list(s.scorers) if s.scorers is not None else all_scorers()


def latent_only(scorers: list[str] | None) -> list[str]:
    """The latent scorers of a study's --scorers (every one where it names none, or none given)."""
    return list(dict.fromkeys(name for name in scorers or () if name in SCORERS)) or list(SCORERS)


def latent_scorers(s: BaselineSettings) -> list[str]:
    """The scorers of the autointerp stage (none: the stage is left out)."""
    return [name for name in study_scorers(s) if name not in MEASURES]


def check_scorers(s: BaselineSettings) -> None:
    names = study_scorers(s)
    unknown = [n for n in names if n not in all_scorers()]
    if unknown or not names:
        raise BadInput(f"unknown scorer {unknown[0] if unknown else '(none)'!r}; choose from "
                       f"{', '.join(all_scorers())}.")
    if len(set(names)) != len(names):
        raise BadInput(f"--scorers names a scorer twice: {','.join(names)!r}.")
    if s.probing.probe_data is not None and not probes_wanted(s):
        raise BadInput("--probe-data is read by the probing stage; add probing to --scorers.")


def autointerp_settings(s: BaselineSettings, seed: int):
    """The autointerp stage's settings at a unit's seed (its scorers: the latent ones of --scorers)."""
    return dataclasses.replace(s.autointerp, seed=seed, scorers=latent_scorers(s))


def probes_wanted(s: BaselineSettings) -> bool:
    return any(name in MEASURES for name in study_scorers(s))


def probe_settings(s: BaselineSettings, seed: int):
    """The probing stage's settings at a unit's seed (absorption where --scorers names it)."""
    return dataclasses.replace(s.probing, seed=seed, absorption="absorption" in study_scorers(s))


def judge_asked(settings: BaselineSettings) -> bool:
    """Whether a scorer of the study asks the judge (to explain, or to score)."""
    from randsae.scorer_kinds import SCORER_KINDS

    return any(SCORER_KINDS[s].uses_judge or SCORER_KINDS[s].needs_explanation for s in latent_scorers(settings))
