"""Auto-interpretability (docs/paper.md §2.3): explanations of SAE latents written by an LLM and scored by fuzzing,
detection, embedding similarity and token lookup, with AUROC per latent and pooled per layer.

prompts       the text an explainer or a judge reads, and how answers are read back
explainer     one latent's explanation from its explainer set
scorers       the scorers: window sets, fuzzing marks, P(1) per window, AUROC per latent
clients/      the LLMs: `local` (transformers, no generation when scoring) and `openai` (any
              OpenAI-compatible server), and the call log every call goes through
calibration   the known-answer set that says whether a judge can score at all
records       what a run writes and reads back (typed)
"""
