"""The auto-interpretability scorers, registered once: what each is called, whether it asks an LLM judge
(and so needs the judge's calibration), whether it needs an explanation, and whether the comparison across
variants, its figure and the verdict carry it. The CLI's choices, `lm autointerp`'s LLM scorers, the comparison's
columns, the verdict's rows and the figure's rows are derived from here; the scoring itself is in
`randsae.autointerp.scorers`.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class ScorerKind:
    name: str
    label: str  # what a table or figure calls its score
    uses_judge: bool  # asks the LLM judge: its AUROC is only as good as the judge's calibration on it
    needs_explanation: bool
    compared: bool  # carried by `lm compare`, Fig. 1–2 and the verdict, each with its own judge flag
    field: str = ""  # its nested field in the comparison table (default its name; `tokens` is a column already)
    embeds: bool = False  # needs the sentence-embedding model
    measure: str = "auroc"  # what it reports: an AUROC (chance 0.5) or an accuracy (chance 1/windows per trial)

    @property
    def label_measure(self) -> str:
        return "AUROC" if self.measure == "auroc" else "accuracy"

    @property
    def column(self) -> str:
        """Its AUROC's column in the comparison table: auroc_<field>."""
        return f"{self.measure}_{self.field or self.name}"

    def bound(self, end: str) -> str:
        """The column of its interval's `end` (low, high) in the comparison table."""
        return f"{self.measure}_{end}_{self.field or self.name}"


SCORER_KINDS: dict[str, ScorerKind] = {s.name: s for s in (
    ScorerKind("fuzzing", "fuzzing AUROC", uses_judge=True, needs_explanation=True, compared=True),
    ScorerKind("detection", "detection AUROC", uses_judge=True, needs_explanation=True, compared=True),
    ScorerKind("embedding", "embedding AUROC", uses_judge=False, needs_explanation=True, compared=True,
               embeds=True),
    ScorerKind("tokens", "token-lookup AUROC", uses_judge=False, needs_explanation=False, compared=True,
               field="token_lookup"),
    ScorerKind("examples", "example-embedding AUROC", uses_judge=False, needs_explanation=False, compared=True,
               embeds=True),
    ScorerKind("intruder", "intruder accuracy", uses_judge=True, needs_explanation=False, compared=True,
               measure="accuracy"),
)}

ALL = tuple(SCORER_KINDS)
JUDGED = tuple(s.name for s in SCORER_KINDS.values() if s.uses_judge)
PER_WINDOW = tuple(s for s in JUDGED if SCORER_KINDS[s].measure == "auroc")  # the judge's P(1) per window
COMPARED = tuple(s.name for s in SCORER_KINDS.values() if s.compared)
EMBEDS = tuple(s.name for s in SCORER_KINDS.values() if s.embeds)


def base(name: str) -> str:
    """The scorer of a result's name: `fuzzing` for `fuzzing` (scored against random silent windows, the
    paper's) and for `fuzzing@similar-tokens` (against hard negatives of that kind)."""
    return name.partition("@")[0]


def named(scorer: str, negatives: str) -> str:
    """A result's name: the scorer, with `@<kind>` when scored against hard negatives."""
    return scorer if negatives == "random" else f"{scorer}@{negatives}"


def needs_explanation(name: str) -> bool:
    return SCORER_KINDS[base(name)].needs_explanation
