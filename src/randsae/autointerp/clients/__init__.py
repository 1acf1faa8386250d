"""The LLMs behind explanations and scoring. Both backends answer the same two questions:

- `generate(messages, max_tokens)`: text (an explanation);
- `judge(kind, explanation, windows)`: P(1) per window (None where it could not be read).

`local` runs any causal LM through transformers and never generates to score; `openai` talks to any
OpenAI-compatible server. Every call goes through the run's `CallLog` (`OUT/llm_calls.jsonl`).
"""

from randsae.autointerp.clients.base import CallLog, Completion, Judge, JudgeUnavailable


def make_judge(llm: str = "smollm2", url: str | None = None, model: str | None = None, log: CallLog | None = None,
               **options) -> Judge:
    """A local judge (`llm`: smollm2, a .gguf file, a directory or a hub name) or, with `url`, an
    OpenAI-compatible server serving `model`."""
    if url is not None:
        from randsae.autointerp.clients.openai import OpenAIJudge

        if not model:
            raise ValueError("--llm-url needs --llm-model, the model name the server serves.")
        return OpenAIJudge(url, model, log=log, **options)
    from randsae.autointerp.clients.local import LocalJudge

    local_options = {k: v for k, v in options.items() if k in ("device", "batch_size", "dtype")}
    return LocalJudge(llm, log=log, **local_options)


__all__ = ["CallLog", "Completion", "Judge", "JudgeUnavailable", "make_judge"]
