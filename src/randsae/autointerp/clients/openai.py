"""Any OpenAI-compatible server (vLLM, llama.cpp, SGLang, TGI, OpenAI, OpenRouter) through chat completions
with `logprobs`/`top_logprobs`: async, at most `concurrency` requests in flight, a timeout per request, retries
with exponential backoff on 429, 5xx, timeouts and connection errors. The API key is read from the environment
variable `api_key_env` and goes only into the request header: never into the call log, the config or a log."""

import asyncio
import contextlib
import logging
import os
import random
import time

import httpx

from randsae.autointerp import prompts
from randsae.autointerp.clients.base import CallLog, Completion, Judge, JudgeUnavailable
from randsae.errors import BadInput

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class RequestFailed(Exception):
    pass


class OpenAIJudge(Judge):
    def __init__(self, url: str, model: str, log: CallLog | None = None, concurrency: int = 8,
                 timeout: float = 60.0, retries: int = 4, backoff: float = 0.5, top_logprobs: int = 5,
                 api_key_env: str = "OPENAI_API_KEY", windows_per_prompt: int = 5, **_):
        if concurrency < 1:
            raise BadInput(f"--concurrency must be a positive integer, not {concurrency}.")
        if not timeout > 0:
            raise BadInput(f"--timeout must be positive, not {timeout}.")
        if retries < 0:
            raise BadInput(f"--retries must be 0 or more, not {retries}.")
        if not backoff >= 0:
            raise BadInput(f"--retry-backoff must be 0 or more seconds, not {backoff}.")
        if not url.startswith(("http://", "https://")):
            raise BadInput(f"--llm-url must start with http:// or https://, not {url!r}.")
        self.url, self.model = url.rstrip("/"), model
        self.log = log or CallLog()
        self.concurrency, self.timeout, self.retries, self.backoff = concurrency, timeout, retries, backoff
        self.top_logprobs, self.windows_per_prompt = top_logprobs, windows_per_prompt
        key = os.environ.get(api_key_env)
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client: httpx.AsyncClient | None = None
        self._semaphore: asyncio.Semaphore | None = None

    def describe(self) -> dict:
        return {"backend": "openai", "url": self.url, "model": self.model, "top_logprobs": self.top_logprobs,
                "windows_per_prompt": self.windows_per_prompt}

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
            self._client = httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=self._headers)
            self._semaphore = asyncio.Semaphore(self.concurrency)
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def check(self) -> None:
        """The server answers and serves `model`; one sentence otherwise."""
        try:
            response = await self.client().get(f"{self.url}/models")
        except httpx.HTTPError as e:
            raise JudgeUnavailable(f"cannot reach the judge at {self.url} ({type(e).__name__}: "
                                   f"{str(e) or 'no answer'}).") from None
        if response.status_code in (401, 403):
            raise JudgeUnavailable(f"the judge at {self.url} refused the request (HTTP {response.status_code}); "
                                   "is the API key in the environment variable named by --api-key-env?")
        if response.status_code != 200:
            raise JudgeUnavailable(f"the judge at {self.url} answered HTTP {response.status_code} to "
                                   f"GET {self.url}/models; is it an OpenAI-compatible /v1 endpoint?")
        try:
            served = [m["id"] for m in response.json().get("data", [])]
        except (ValueError, AttributeError, KeyError, TypeError):
            raise JudgeUnavailable(f"the judge at {self.url} did not answer GET /models with a model list; is "
                                   "it an OpenAI-compatible /v1 endpoint?") from None
        if served and self.model not in served:
            raise JudgeUnavailable(f"the judge at {self.url} does not serve model {self.model!r}; it serves "
                                   f"{', '.join(served[:5])}{' …' if len(served) > 5 else ''}.")

    async def _post(self, body: dict) -> Completion:
        """One chat completion, retried on what retrying can fix."""
        client = self.client()
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(min(self.backoff * 2 ** (attempt - 1), 30.0) * (1 + random.random() / 2))
            started = time.perf_counter()
            try:
                async with self._semaphore or contextlib.nullcontext():
                    response = await client.post(f"{self.url}/chat/completions", json=body)
            except httpx.HTTPError as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                continue
            if response.status_code in RETRY_STATUS:
                last = f"HTTP {response.status_code}"
                retry_after = response.headers.get("retry-after", "")
                if retry_after.replace(".", "", 1).isdigit():
                    await asyncio.sleep(min(float(retry_after), 30.0))
                continue
            if response.status_code != 200:
                raise RequestFailed(f"HTTP {response.status_code}: {response.text[:200]}")
            try:
                data = response.json()
                choice = data["choices"][0]
                text = choice["message"]["content"] or ""
                logprobs = (choice.get("logprobs") or {}).get("content")
                usage = data.get("usage") or {}
                tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
                if not isinstance(text, str) or not isinstance(logprobs, list | None):
                    raise TypeError
            except (ValueError, KeyError, IndexError, TypeError, AttributeError, OverflowError):
                raise RequestFailed(f"not a chat completion: {response.text[:200]}") from None
            return Completion(text, logprobs, *tokens, time.perf_counter() - started)
        raise RequestFailed(f"gave up after {self.retries + 1} attempts ({last})")

    async def _call(self, kind: str, body: dict, count: int = 0) -> tuple[Completion | None, str | None]:
        cached = self.log.get(body)
        if cached is not None:
            return cached, None
        started = time.perf_counter()
        try:
            completion = await self._post(body)
        except RequestFailed as e:
            self.log.put(kind, body, None, str(e), time.perf_counter() - started)
            return None, str(e)
        error = None
        if kind == "judge":  # an answer with no logprobs, or a list too short, is a failure and asked again
            if not completion.logprobs:
                error = "the response holds no logprobs"
            elif any(p is None for p in prompts.probabilities(completion.logprobs, count)):
                error = f"the answer {completion.text[:60]!r} is not a list of {count} digits with logprobs"
        self.log.put(kind, body, None if error else completion, error, time.perf_counter() - started)
        return (None, error) if error else (completion, None)

    def _body(self, messages: list[dict], max_tokens: int, logprobs: bool) -> dict:
        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
        if logprobs:
            body |= {"logprobs": True, "top_logprobs": self.top_logprobs}
        return body

    async def generate(self, messages: list[dict], max_tokens: int = 128,
                       answer_start: str | None = None) -> Completion | None:
        """`answer_start` is not sent: chat servers do not all continue an assistant turn; the prompt asks
        for the line instead."""
        completion, _ = await self._call("explain", self._body(messages, max_tokens, logprobs=False))
        return completion

    async def judge(self, kind: str, explanation: str, windows: list, style: str = "delphi") -> list[float | None]:
        groups = [windows[i:i + self.windows_per_prompt] for i in range(0, len(windows), self.windows_per_prompt)]

        async def one(group: list) -> list[float | None]:
            body = self._body(prompts.judge_messages(kind, explanation, group, style), 4 * len(group) + 8, True)
            completion, _ = await self._call("judge", body, len(group))
            if completion is None:
                return [None] * len(group)
            return prompts.probabilities(completion.logprobs or [], len(group))

        results = await asyncio.gather(*(one(g) for g in groups))
        return [p for group in results for p in group]
