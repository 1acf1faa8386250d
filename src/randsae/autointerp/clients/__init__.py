"""The LLMs behind explanations and scoring. Both backends answer the same two questions:

- `generate(messages, max_tokens)`: text (an explanation);
- `judge(kind, explanation, windows)`: P(1) per window (None where it could not be read).

`local` runs any causal LM through transformers and never generates to score; `openai` talks to any
OpenAI-compatible server. Every call goes through the run's `CallLog` (`OUT/llm_calls.jsonl`).
"""

from dataclasses import dataclass

from randsae.autointerp.clients.base import CallLog, Completion, Judge, JudgeUnavailable
from randsae.errors import BadInput
from randsae.settings import setting

LOCAL_DTYPES = ("float32", "bfloat16", "float16", "auto")
LOCAL_JUDGE = "smollm2"  # the embedded judge, where no other is named


@dataclass
class JudgeSettings:
    """The explainer and judge, every default in one place: the flags of `lm autointerp` and `baseline` come
    from these fields, a study records the ones given, and `options()` is what `make_judge` takes."""
    llm: str | None = setting(None, help="the local judge: smollm2 (embedded), a .gguf file, a directory or a hub "
                                         "name", shown="smollm2 without --llm-url")
    url: str | None = setting(None, flag="--llm-url", shown="none: the local judge",
                              help="an OpenAI-compatible endpoint instead, e.g. http://127.0.0.1:8000/v1 (vLLM, "
                                   "llama.cpp)")
    model: str | None = setting(None, flag="--llm-model", shown="none",
                                help="with --llm-url: the model name the server serves")
    api_key_env: str = setting("OPENAI_API_KEY", help="environment variable holding the API key (read, never "
                                                      "written)")
    concurrency: int = setting(8, help="with --llm-url: requests in flight")
    timeout: float = setting(60.0, help="with --llm-url: seconds per request")
    retries: int = setting(4, help="with --llm-url: retries on 429, 5xx, timeouts, lost connections")
    backoff: float = setting(0.5, flag="--retry-backoff",
                             help="with --llm-url: seconds before the first retry, doubling after each")
    windows_per_prompt: int = setting(5, help="with --llm-url: windows per judge prompt (the paper's)")
    dtype: str = setting("float32", flag="--judge-dtype",
                         help="local judge: float32, bfloat16 (faster on GPUs and CPUs with bf16), float16, or "
                              "auto (bfloat16 where the device computes it natively, else float32)")
    batch_size: int = setting(32, flag="--judge-batch-size", help="local judge: windows per forward pass")
    device: str = "auto"  # the local judge's; the command's --device

    def __post_init__(self) -> None:
        if self.url is None and self.model is not None:
            raise BadInput("--llm-model names the model of a server; give --llm-url too (or --llm for a local "
                           "one).")
        if self.url is not None and self.llm is not None:
            raise BadInput(f"--llm {self.llm} names a local judge and --llm-url {self.url} a server; give one of "
                           "them.")
        if self.url is None and self.llm is None:
            self.llm = LOCAL_JUDGE
        if self.windows_per_prompt < 1:
            raise BadInput(f"--windows-per-prompt must be a positive integer, not {self.windows_per_prompt}.")
        if self.dtype not in LOCAL_DTYPES:
            raise BadInput(f"--judge-dtype must be float32, bfloat16, float16 or auto, not {self.dtype!r}.")
        if self.batch_size < 1:
            raise BadInput(f"--judge-batch-size must be a positive integer, not {self.batch_size}.")

    def options(self) -> dict:
        """What `make_judge` takes: a server's options, or the local judge's."""
        if self.url:
            return {"url": self.url, "model": self.model, "concurrency": self.concurrency, "timeout": self.timeout,
                    "retries": self.retries, "backoff": self.backoff, "api_key_env": self.api_key_env,
                    "windows_per_prompt": self.windows_per_prompt}
        return {"llm": self.llm, "device": self.device, "batch_size": self.batch_size, "dtype": self.local_dtype()}

    def local_dtype(self) -> str:
        """The local judge's float type, `auto` resolved for its device."""
        if self.dtype != "auto":
            return self.dtype
        from randsae.cpu import native_bfloat16

        return "bfloat16" if native_bfloat16(self.device) else "float32"

    def describe(self) -> str:
        shown = self.dtype if self.dtype != "auto" else f"auto: {self.local_dtype()}"
        return f"{self.model} at {self.url}" if self.url else f"{self.llm} (local, {shown})"


def make_judge(llm: str = "smollm2", url: str | None = None, model: str | None = None, log: CallLog | None = None,
               **options) -> Judge:
    """A local judge (`llm`: smollm2, a .gguf file, a directory or a hub name) or, with `url`, an
    OpenAI-compatible server serving `model`."""
    if url is not None:
        from randsae.autointerp.clients.openai import OpenAIJudge

        if not model:
            raise BadInput("--llm-url needs --llm-model, the model name the server serves.")
        return OpenAIJudge(url, model, log=log, **options)
    from randsae.autointerp.clients.local import LocalJudge

    local_options = {k: v for k, v in options.items() if k in ("device", "batch_size", "dtype")}
    return LocalJudge(llm, log=log, **local_options)


__all__ = ["CallLog", "Completion", "Judge", "JudgeSettings", "JudgeUnavailable", "make_judge"]
