"""Any causal LM through transformers, on this machine (default: the embedded SmolLM2-135M-Instruct).

Explanations are generated greedily. Scoring never generates: each window is its own short suffix after a
shared prefix (the judge's instructions and the explanation), the prefix's keys and values are computed once
per explanation, and a batch of suffixes is run against them; P(1) = p("1") / (p("0") + p("1")) is read from
the logits at the answer position. So the local judge sees one window per prompt (the HTTP judge sees the
paper's five): a list answer would need the earlier elements generated first."""

import asyncio
import copy
import inspect
import json
import time

import torch

from randsae.autointerp import prompts
from randsae.autointerp.clients.base import CallLog, Completion, Judge
from randsae.errors import BadInput

SENTINEL = "\u2063RANDSAE-WINDOW\u2063"


def chat_text(tokenizer, messages: list[dict]) -> str:
    """The prompt as the model was trained to read it: its chat template, or plain turns for a base model."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages]
    return "\n\n".join(turns) + "\n\nAssistant:"


def digit_ids(tokenizer) -> dict[str, list[int]]:
    """Token ids that read as the digit 0 or 1 (with or without a leading space)."""
    out: dict[str, list[int]] = {"0": [], "1": []}
    for d in out:
        for text in (d, " " + d):
            ids = tokenizer.encode(text, add_special_tokens=False)
            if len(ids) == 1 and ids[0] not in out[d]:
                out[d].append(ids[0])
    if not out["0"] or not out["1"]:
        raise BadInput("the judge's tokenizer has no single token for the digits 0 and 1.")
    return out


class LocalJudge(Judge):
    windows_per_prompt = 1

    def __init__(self, llm: str = "smollm2", log: CallLog | None = None, device: str = "auto",
                 batch_size: int = 32, dtype: str = "float32", **_):
        from randsae.config import resolve_device
        from randsae.lm.models import load_model

        if batch_size < 1:
            raise BadInput(f"--judge-batch-size must be a positive integer, not {batch_size}.")
        self.name, self.batch_size, self.log, self.dtype = llm, batch_size, log or CallLog(), dtype
        self.device = resolve_device(device)
        self.model, self.tokenizer = load_model(llm, dtype=dtype, device=self.device)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.digits = digit_ids(self.tokenizer)
        # transformers 5 names the key/value cache `cache`; 4.x `past_key_values`
        parameters = inspect.signature(self.model.forward).parameters
        self._cache_argument = "cache" if "cache" in parameters else "past_key_values"

    def describe(self) -> dict:
        return {"backend": "local", "model": self.name, "windows_per_prompt": 1, "dtype": self.dtype}

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False)

    async def generate(self, messages: list[dict], max_tokens: int = 128,
                       answer_start: str | None = None) -> Completion | None:
        """Greedy. With `answer_start` the answer is begun with it (a small model then writes the phrase the
        parser reads instead of wandering), and the text returned starts with it."""
        request = {"model": self.name, "dtype": self.dtype, "messages": messages, "max_tokens": max_tokens,
                   "answer_start": answer_start}
        cached = self.log.get(request)
        if cached is not None:
            return cached
        started = time.perf_counter()
        text = chat_text(self.tokenizer, messages) + (answer_start or "")
        ids = torch.tensor([self._encode(text)], device=self.device)
        with torch.no_grad():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_tokens,
                                      do_sample=False, pad_token_id=self.tokenizer.pad_token_id)
        new = out[0, ids.shape[1]:]
        answer = (answer_start or "") + self.tokenizer.decode(new, skip_special_tokens=True)
        completion = Completion(answer, None, ids.shape[1], len(new),
                                time.perf_counter() - started)
        self.log.put("explain", request, completion, seconds=completion.seconds)
        await asyncio.sleep(0)
        return completion

    def split(self, kind: str, explanation: str, style: str) -> tuple[str, str]:
        """(prefix, suffix template) of a one-window judge prompt; the window goes where SENTINEL is."""
        text = chat_text(self.tokenizer, prompts.judge_chat(kind, explanation, [SENTINEL], style))
        at = text.index(SENTINEL)
        return text[:at], text[at:]

    def p_one(self, prefix: str, suffixes: list[str]) -> list[float]:
        """P(1) at the answer position of prefix + each suffix, the prefix run once."""
        prefix_ids = torch.tensor([self._encode(prefix)], device=self.device)
        with torch.no_grad():
            out = self.model(prefix_ids, use_cache=True)
        past = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        encoded = [self._encode(s) for s in suffixes]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        out = [0.0] * len(encoded)
        zero, one = self.digits["0"], self.digits["1"]
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in chunk)
            ids = torch.full((len(chunk), width), self.tokenizer.pad_token_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), prefix_ids.shape[1] + width), dtype=torch.long)
            mask[:, :prefix_ids.shape[1]] = 1
            for row, i in enumerate(chunk):
                ids[row, :len(encoded[i])] = torch.tensor(encoded[i])
                mask[row, prefix_ids.shape[1]:prefix_ids.shape[1] + len(encoded[i])] = 1
            cache = copy.deepcopy(past)
            cache.batch_repeat_interleave(len(chunk))
            with torch.no_grad():
                logits = self.model(ids.to(self.device), attention_mask=mask.to(self.device),
                                    use_cache=True, **{self._cache_argument: cache}).logits
            last = torch.tensor([len(encoded[i]) - 1 for i in chunk], device=self.device)
            logp = torch.log_softmax(logits[torch.arange(len(chunk)), last].float(), dim=-1)
            p0, p1 = logp[:, zero].exp().sum(-1), logp[:, one].exp().sum(-1)
            for row, i in enumerate(chunk):
                out[i] = float(p1[row] / (p0[row] + p1[row]))
        return out

    async def judge(self, kind: str, explanation: str, windows: list, style: str = "delphi") -> list[float | None]:
        prefix, template = self.split(kind, explanation, style)
        suffixes = [template.replace(SENTINEL, prompts.excerpt(w, kind, style)) for w in windows]
        request = {"model": self.name, "dtype": self.dtype, "prefix": prefix, "suffixes": suffixes}
        cached = self.log.get(request)
        if cached is not None:
            return json.loads(cached.text)
        started = time.perf_counter()
        probabilities = self.p_one(prefix, suffixes)
        seconds = time.perf_counter() - started
        tokens = len(self._encode(prefix)) + sum(len(self._encode(s)) for s in suffixes)
        completion = Completion(json.dumps(probabilities), None, tokens, 0, seconds)
        self.log.put("judge", request, completion, seconds=seconds)
        await asyncio.sleep(0)
        return list(probabilities)
