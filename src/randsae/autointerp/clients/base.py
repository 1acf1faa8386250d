"""What every judge shares: the completion record, the call log, and the interface."""

import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from randsae.errors import BadInput


class JudgeUnavailable(BadInput):
    """The judge cannot be used at all (unreachable, unknown model): the run stops before any work."""


@dataclass
class Completion:
    text: str
    logprobs: list[dict] | None = None  # OpenAI style: [{"token", "logprob", "top_logprobs": [...]}]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    cached: bool = False


@dataclass
class Call:
    """One line of OUT/llm_calls.jsonl."""

    key: str  # sha256 of the request (model, messages, parameters): what makes two calls the same
    kind: str  # explain, judge
    request: dict
    response: dict | None  # a Completion's fields (None when the call failed)
    error: str | None
    seconds: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    time: float = field(default_factory=time.time)


def request_key(request: dict) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class CallLog:
    """Every LLM call of a run, appended to a JSON-lines file as it finishes. A call that succeeded is
    answered from the log on a rerun (nobody pays twice); failed calls are recorded and asked again.
    `path=None` keeps the log in memory only. Counts every call in the log (`requested`, `failed`), those this
    process sent (`asked`) and those the log answered (`reused`)."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.answers: dict[str, dict] = {}
        self.lock = threading.Lock()
        self.requested = self.reused = self.failed = 0
        self.prompt_tokens = self.completion_tokens = 0
        self.seconds = 0.0
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    call = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: that call is asked again
                if not isinstance(call, dict) or "key" not in call:
                    continue
                self.requested += 1  # the counts cover every call made into this log, by any run
                self.failed += call.get("response") is None
                self.prompt_tokens += int(call.get("prompt_tokens") or 0)
                self.completion_tokens += int(call.get("completion_tokens") or 0)
                self.seconds += float(call.get("seconds") or 0.0)
                if call.get("response") is not None:
                    self.answers[call["key"]] = call["response"]
        self.asked = 0  # calls this process sent to the LLM

    def get(self, request: dict) -> Completion | None:
        answer = self.answers.get(request_key(request))
        if answer is None:
            return None
        with self.lock:
            self.reused += 1
        return Completion(**{**answer, "cached": True})

    def put(self, kind: str, request: dict, completion: Completion | None, error: str | None = None,
            seconds: float = 0.0) -> None:
        key = request_key(request)
        response = None if completion is None else {k: v for k, v in asdict(completion).items() if k != "cached"}
        tokens = (completion.prompt_tokens, completion.completion_tokens) if completion else (0, 0)
        call = Call(key, kind, request, response, error, seconds, *tokens)
        with self.lock:
            self.requested += 1
            self.asked += 1
            self.failed += completion is None
            self.seconds += seconds
            if completion is not None and response is not None:
                self.answers[key] = response
                self.prompt_tokens += completion.prompt_tokens
                self.completion_tokens += completion.completion_tokens
            if self.path is not None:
                with self.path.open("a") as f:
                    f.write(json.dumps(asdict(call), ensure_ascii=False) + "\n")

    def counts(self) -> dict:
        return {"llm_calls": self.requested, "llm_calls_this_run": self.asked, "llm_calls_reused": self.reused,
                "llm_calls_failed": self.failed,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "llm_seconds": round(self.seconds, 3)}


class Judge:
    """The interface both backends implement."""

    windows_per_prompt: int = 5

    def describe(self) -> dict:
        """What identifies this judge in a run's config (never a secret)."""
        raise NotImplementedError

    async def check(self) -> None:
        """Raise JudgeUnavailable when the judge cannot be used at all."""

    async def generate(self, messages: list[dict], max_tokens: int = 128,
                       answer_start: str | None = None) -> Completion | None:
        raise NotImplementedError

    async def judge(self, kind: str, explanation: str, windows: list, style: str = "delphi") -> list[float | None]:
        raise NotImplementedError

    async def close(self) -> None:
        pass
