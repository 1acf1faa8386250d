"""What the explainer and the judges read (docs/paper.md §2.3), and how their answers are read back.

The text is randsae's own; the format is the paper's (EleutherAI delphi's): tokens where a latent is active at
≥ 0.3 × the window's maximum are enclosed in `<<…>>` (consecutive ones share one pair); the explainer also
gets each marked token with its activation as an integer 0–10 of the latent's maximum and ends its answer
with an `[EXPLANATION]:` line; a judge answers a list of 0/1, one per window.

Two formats for the judge: `delphi` (the paper's: every excerpt in full, marks in place) and `simple` (for
fuzzing only the marked tokens of each excerpt are shown; detection is unchanged). `simple` is an option
for small judges, never the default.
"""

import re
from dataclasses import dataclass

from randsae.scorer_kinds import PER_WINDOW

MARK_FRACTION = 0.3
FORMATS = ("delphi", "simple")
KINDS = PER_WINDOW  # a judge prompt per scorer that asks the judge for P(1) per window (randsae.scorer_kinds)
NEWLINE = "↵"  # a newline inside a window, shown so that every excerpt stays on one line


@dataclass
class Shown:
    """A window as a judge sees it: its tokens as text and which of them are marked."""

    tokens: list[str]
    marked: list[bool]


class TokenTexts:
    """Token ids → their text, each id decoded once (a window is shown as its tokens' texts)."""

    def __init__(self, tokenizer):
        self.tokenizer, self.texts = tokenizer, {}

    def __call__(self, ids: list[int]) -> list[str]:
        missing = sorted({i for i in ids if i not in self.texts})
        if missing:
            self.texts.update(zip(missing, self.tokenizer.batch_decode([[i] for i in missing]), strict=True))
        return [self.texts[i] for i in ids]


def marks(activations: list[float], fraction: float = MARK_FRACTION) -> list[bool]:
    """The tokens at ≥ `fraction` × the window's maximum activation (none in a silent window)."""
    top = max(activations, default=0.0)
    return [top > 0 and a >= fraction * top for a in activations]


def clean(token: str) -> str:
    return token.replace("\r\n", NEWLINE).replace("\n", NEWLINE).replace("\r", NEWLINE)


def render(tokens: list[str], marked: list[bool] | None = None) -> str:
    """The window's text with each run of marked tokens enclosed in one `<<…>>` pair."""
    marked = marked or [False] * len(tokens)
    out, inside = [], False
    for token, mark in zip(tokens, marked, strict=True):
        if mark and not inside:
            out.append("<<")
        elif not mark and inside:
            out.append(">>")
        inside = mark
        out.append(clean(token))
    if inside:
        out.append(">>")
    return "".join(out)


def marked_tokens(shown: Shown) -> list[str]:
    return [clean(t).strip() or clean(t) for t, m in zip(shown.tokens, shown.marked, strict=True) if m]


def scale(activation: float, latent_max: float) -> int:
    """An activation as an integer 0–10 of the latent's maximum."""
    return round(10 * activation / latent_max) if latent_max > 0 else 0


EXPLAINER_SYSTEM = (
    "You are studying one feature inside a language model. You will see excerpts of text where the feature is "
    "active. Tokens where it is strongly active are enclosed in << and >>. Below each excerpt, every marked "
    "token is listed with the feature's activation on it, from 0 (weak) to 10 (its strongest). Work out what "
    "the marked tokens have in common, using their context where it matters, and describe it in one short "
    "phrase. End your answer with a line of the form\n[EXPLANATION]: <your phrase>")


def explainer_messages(windows: list[tuple[list[str], list[float]]], latent_max: float) -> list[dict]:
    """The explainer's chat: each (tokens, activations) window with its marks and its marked tokens'
    activations as integers 0–10 of `latent_max`."""
    parts = []
    for number, (tokens, activations) in enumerate(windows, start=1):
        marked = marks(activations)
        listed = ", ".join(f'("{clean(t).strip() or clean(t)}", {scale(a, latent_max)})'
                           for t, a, m in zip(tokens, activations, marked, strict=True) if m)
        parts.append(f"Excerpt {number}: {render(tokens, marked)}\nActivations: {listed}")
    return [{"role": "system", "content": EXPLAINER_SYSTEM}, {"role": "user", "content": "\n\n".join(parts)}]


EXPLANATION_LINE = re.compile(r"\[EXPLANATION\][ \t]*:\s*(.+)", re.IGNORECASE)


def parse_explanation(text: str) -> str | None:
    """The phrase on the last `[EXPLANATION]:` line, or None when there is none."""
    found = EXPLANATION_LINE.findall(text or "")
    phrase = found[-1].strip().strip('"').strip() if found else ""
    phrase = phrase[:300]
    return phrase or None


TASK = {
    "fuzzing": "In each excerpt some tokens are enclosed in << and >>. Decide whether the marked tokens are "
               "ones the feature, as explained, is active on: 1 if they fit the explanation, 0 if not.",
    "detection": "Decide whether the feature, as explained, is active anywhere in the excerpt: 1 if it is, "
                 "0 if not.",
}
TASK_SIMPLE_FUZZING = ("For each excerpt you see only the tokens that were marked in it. Decide whether they "
                       "are tokens the feature, as explained, is active on: 1 if they fit the explanation, 0 "
                       "if not.")


def judge_system(kind: str, count: int, style: str = "delphi") -> str:
    task = TASK_SIMPLE_FUZZING if (style == "simple" and kind == "fuzzing") else TASK[kind]
    intro = "You check explanations of a feature inside a language model. You get the explanation, then "
    if count == 1:
        return intro + f"one excerpt of text. {task} Answer with a single digit, 1 or 0, and nothing else."
    example = "[" + ", ".join("1" if i % 3 == 0 else "0" for i in range(count)) + "]"
    return (intro + f"{count} numbered excerpts of text. {task} Answer with a list of {count} values, 0 or 1, "
            f"one per excerpt in order, and nothing else, for example {example}.")


def excerpt(shown: Shown, kind: str, style: str = "delphi") -> str:
    if kind == "detection":
        return render(shown.tokens)
    if style == "simple":
        return ", ".join(marked_tokens(shown)) or "(none)"
    return render(shown.tokens, shown.marked)


def judge_messages(kind: str, explanation: str, windows: list[Shown], style: str = "delphi") -> list[dict]:
    """A judge's chat for one prompt of windows (fuzzing shows the marks, detection none)."""
    return judge_chat(kind, explanation, [excerpt(w, kind, style) for w in windows], style)


def judge_chat(kind: str, explanation: str, excerpts: list[str], style: str = "delphi") -> list[dict]:
    if len(excerpts) == 1:
        body = f"Excerpt:\n{excerpts[0]}"
    else:
        body = "\n".join(f"Excerpt {i}: {text}" for i, text in enumerate(excerpts, start=1))
    return [{"role": "system", "content": judge_system(kind, len(excerpts), style)},
            {"role": "user", "content": f"Explanation: {explanation}\n\n{body}"}]


INTRUDER_SYSTEM = ("You find the odd one out among excerpts of text. In all but one of them a certain feature "
                   "inside a language model is active; in one it is not. Answer with the number of the excerpt "
                   "that does not belong, and nothing else.")
INTRUDER_START = "Intruder: excerpt"


def intruder_messages(excerpts: list[str]) -> list[dict]:
    """The intruder question: numbered plain excerpts (no marks), one of them silent."""
    body = "\n".join(f"Excerpt {i}: {text}" for i, text in enumerate(excerpts, start=1))
    return [{"role": "system", "content": INTRUDER_SYSTEM},
            {"role": "user", "content": f"{body}\n\nWhich excerpt is the odd one out?"}]


def parse_intruder(text: str | None, count: int) -> int | None:
    """The 0-based index the answer names (its first number from 1 to `count`), or None."""
    for found in re.findall(r"\d+", (text or "").removeprefix(INTRUDER_START)):
        if 1 <= int(found) <= count:
            return int(found) - 1
    return None


EXCERPT_LINE = re.compile(r"^Excerpt(?: \d+)?:[ \n](.*)$", re.MULTILINE)


def excerpts_of(messages: list[dict]) -> list[str]:
    """The excerpts a judge prompt shows, in order (for judges that answer by rule, e.g. test doubles)."""
    return EXCERPT_LINE.findall(messages[-1]["content"])


def explanation_of(messages: list[dict]) -> str:
    first = messages[-1]["content"].split("\n", 1)[0]
    return first.removeprefix("Explanation: ")


def digit(token: str) -> str | None:
    """'0' or '1' when a token is that digit, give or take spaces and list punctuation."""
    stripped = token.strip().strip("[],").strip()
    return stripped if stripped in ("0", "1") else None


def _token(entry) -> str:
    """An answer token's text; anything a broken server sends in its place (null, a number) is no text."""
    text = entry.get("token") if isinstance(entry, dict) else None
    return text if isinstance(text, str) else ""


def _logprob(entry) -> float | None:
    """A log-probability a server sent, or None when it is not one (not a number, positive, not finite)."""
    value = entry.get("logprob") if isinstance(entry, dict) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value <= 0:
        return None
    return float(value)


def probabilities(logprobs: list[dict], count: int) -> list[float | None]:
    """P(1) = p("1") / (p("0") + p("1")) of the first `count` elements of the answer's `[…]` list, from
    OpenAI-style token logprobs (`[{"token", "logprob", "top_logprobs": [{"token", "logprob"}]}]`). Digits
    outside the brackets (a numbered list, prose) are not elements; for one window a bare digit is the
    answer. An element whose top log-probabilities hold neither digit is None; fewer elements than `count`
    leaves the rest None. Entries that are not what the format says (a null or numeric token, a logprob that
    is no log-probability) count as neither digit."""
    import math

    out: list[float | None] = []
    logprobs = logprobs if isinstance(logprobs, list) else []
    inside = count == 1 and not any("[" in _token(e) for e in logprobs)  # one window: a bare digit
    for entry in logprobs:
        if len(out) == count:
            break
        text = _token(entry)
        opened = inside or "[" in text
        found = digit(text)
        is_element = found is not None and opened and (inside or text.index("[") < text.index(found))
        if "[" in text:
            inside = True
        if "]" in text:
            inside = False
        if not is_element:
            continue
        p = {"0": 0.0, "1": 0.0}
        alternatives = entry.get("top_logprobs")
        if not isinstance(alternatives, list) or not alternatives:
            alternatives = [entry]
        for alternative in alternatives:
            d, logprob = digit(_token(alternative)), _logprob(alternative)
            if d is not None and logprob is not None:
                p[d] += math.exp(logprob)
        total = p["0"] + p["1"]
        out.append(p["1"] / total if total > 0 else None)
    return out + [None] * (count - len(out))
