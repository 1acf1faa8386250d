"""One latent's explanation, from its explainer set (docs/paper.md §2.3)."""

from randsae.autointerp.clients.base import Judge
from randsae.autointerp.prompts import explainer_messages, parse_explanation
from randsae.lm.examples import ExampleSets

ANSWER_START = "[EXPLANATION]:"


async def explain(judge: Judge, sets: ExampleSets, decode, max_tokens: int = 96) -> str | None:
    """The phrase on the explainer's final `[EXPLANATION]:` line; None when the call failed or the answer
    holds no such line. A local judge is started on that line (see `LocalJudge.generate`)."""
    messages = explainer_messages([(decode(w.tokens), w.activations) for w in sets.explainer], sets.max_activation)
    completion = await judge.generate(messages, max_tokens, answer_start=ANSWER_START)
    return parse_explanation(completion.text) if completion is not None else None
