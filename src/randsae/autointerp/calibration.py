"""The judge check: a fixed known-answer set scored by the chosen LLM.

Hand-built latents on the embedded Shakespeare text, each firing on tokens whose explanation is obvious
(one word, a word class, a punctuation mark), with activations drawn at random under the seed. Their example
sets are made by the same code as a real latent's (`randsae.lm.examples`), and the judge scores them with
the true explanation: a judge that can do the task scores near 1; one whose interval holds 0.5 cannot be told
from chance, and every number it gives says so.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from randsae.autointerp.prompts import TokenTexts
from randsae.lm.examples import ExampleSets, ExampleSettings, LatentExamples, Windows
from randsae.seeding import derive_seed


def _words(*words: str) -> Callable[[str], bool]:
    wanted = {w.lower() for w in words}
    return lambda token: token.strip().lower() in wanted


@dataclass(frozen=True)
class KnownLatent:
    explanation: str
    fires: Callable[[str], bool]  # on a token's text


KNOWN = (
    KnownLatent('the word "love"', _words("love")),
    KnownLatent('the word "king"', _words("king")),
    KnownLatent('the word "lord"', _words("lord")),
    KnownLatent("question marks", lambda t: t.strip() == "?"),
    KnownLatent("commas", lambda t: t.strip() == ","),
    KnownLatent('the word "and"', _words("and")),
    KnownLatent("the pronouns I, me and my", _words("i", "me", "my")),
    KnownLatent('the word "good"', _words("good")),
)

CONTEXTS = 400
CONTEXT_LENGTH = 256


def known_answer_set(windows_per_class: int = 20, seed: int = 0,
                     explainer_examples: int = 1) -> tuple[list[ExampleSets], list[str], Callable]:
    """(example sets, true explanations, decode) of the known latents: `windows_per_class` activating test
    windows (drawn by activation stratum, as for a real latent) and as many non-activating ones each.
    Tokenised with the embedded SmolLM2 tokenizer; the judge only ever sees the text."""
    from randsae.lm.models import load_tokenizer
    from randsae.lm.text import contexts, embedded_documents

    tokenizer = load_tokenizer("smollm2")
    rows = contexts(tokenizer, embedded_documents(), CONTEXT_LENGTH, max_contexts=CONTEXTS)
    tokens = rows.reshape(-1).numpy()
    vocabulary = np.unique(tokens)
    decode = TokenTexts(tokenizer)
    texts = dict(zip(vocabulary.tolist(), decode(vocabulary.tolist()), strict=True))

    quantiles = 10 if windows_per_class % 10 == 0 else 1
    settings = ExampleSettings(explainer_examples=explainer_examples, test_examples=windows_per_class,
                               quantiles=quantiles,
                               non_activating=windows_per_class, seed=seed)
    windows = Windows(CONTEXT_LENGTH, settings.window, len(rows))
    sets, explanations = [], []
    for number, known in enumerate(KNOWN):
        firing = np.array([known.fires(texts[t]) for t in vocabulary.tolist()])
        positions = np.flatnonzero(np.isin(tokens, vocabulary[firing]))
        rng = np.random.default_rng(derive_seed(seed, "calibration", number))
        values = rng.uniform(1.0, 10.0, size=len(positions)).astype(np.float32)
        examples = LatentExamples(positions, values, windows, settings, layer=-1, latent=number)
        sets.append(examples.example_sets(tokens, -1, number))
        explanations.append(known.explanation)
    return sets, explanations, decode
