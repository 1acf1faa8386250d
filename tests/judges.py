"""Judges behind real HTTP on loopback, for tests and benchmarks: a scripted OpenAI-compatible server (a test
double at the edge: it stands in for a 70B model) that answers by rule, and can be made slow or faulty."""

import hashlib
import json
import math
import random
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from randsae.autointerp import prompts


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops connections that arrive together

    def handle_error(self, request, client_address):
        pass  # a client that gave up on a hanging answer: the broken pipe is the point


class ScriptedJudge:
    """An OpenAI-compatible chat server on 127.0.0.1. As a judge it answers each excerpt by `mode`:
    `truthful` (P(1) = 0.9 when `truth` says the excerpt is activating, 0.1 otherwise), `inverted`, or `random`;
    as an explainer it answers `[EXPLANATION]: scripted <id>`, the id a hash of the explainer's prompt (so the
    truth, keyed by (explanation, excerpt), is per latent). Faults, each a share of requests drawn under `seed`:
    `fail` (HTTP 500), `hang` (answers after `hang_seconds`), `malformed` (a numbered list, no brackets),
    `no_logprobs`, `nonsense` (logprobs whose tokens are null or numbers). `latency` delays every answer. Counts
    requests by path."""

    def __init__(self, mode: str = "truthful", truth: dict[str, int] | None = None, model: str = "scripted",
                 latency: float = 0.0, fail: float = 0.0, hang: float = 0.0, malformed: float = 0.0,
                 no_logprobs: float = 0.0, nonsense: float = 0.0, hang_seconds: float = 3.0, seed: int = 0,
                 silent_explainer: bool = False):
        self.mode, self.truth, self.model, self.latency = mode, truth or {}, model, latency
        self.silent_explainer = silent_explainer  # as explainer, never writes the [EXPLANATION] line
        self.faults = {"fail": fail, "hang": hang, "malformed": malformed, "no_logprobs": no_logprobs,
                       "nonsense": nonsense}
        self.hang_seconds = hang_seconds
        self.rng, self.seed = random.Random(seed), seed
        self.lock = threading.Lock()
        self.requests = {"models": 0, "chat": 0, "explain": 0, "judge": 0, "faults": 0}
        self.in_flight = self.most_in_flight = 0  # chat requests being answered at once
        judge = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def reply(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                with judge.lock:
                    judge.requests["models"] += 1
                if self.path.rstrip("/").endswith("/models"):
                    self.reply(200, {"object": "list", "data": [{"id": judge.model, "object": "model"}]})
                else:
                    self.reply(404, {"error": "not found"})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                with judge.lock:
                    judge.in_flight += 1
                    judge.most_in_flight = max(judge.most_in_flight, judge.in_flight)
                try:
                    status, answer = judge.answer(body)
                finally:
                    with judge.lock:
                        judge.in_flight -= 1
                self.reply(status, answer)

        self.server = QuietServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "ScriptedJudge":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def fault(self) -> str | None:
        with self.lock:
            draw = self.rng.random()
        edge = 0.0
        for name, share in self.faults.items():
            edge += share
            if draw < edge:
                return name
        return None

    def p_one(self, explanation: str, excerpt: str) -> float:
        if self.mode == "random":  # a coin per (explanation, excerpt): the same whatever order requests arrive in
            digest = hashlib.sha256(f"{self.seed}|{explanation}|{excerpt}".encode()).hexdigest()
            return int(digest[:8], 16) / 16 ** 8
        label = self.truth.get((explanation, excerpt))
        if label is None:
            return 0.5
        p = 0.9 if label else 0.1
        return 1 - p if self.mode == "inverted" else p

    def intruder(self, excerpts: list[str]) -> int:
        """The 0-based excerpt this judge names as the odd one out: the silent one (truthful), an activating one
        (inverted), or a coin over all of them (random)."""
        if self.mode == "random":
            digest = hashlib.sha256(f"{self.seed}|{'|'.join(excerpts)}".encode()).hexdigest()
            return int(digest[:8], 16) % len(excerpts)
        # the latent these are of: the one active in all but one of them (a window can be another latent's)
        active = [self.truth.get(("active", e), frozenset()) for e in excerpts]
        counts: dict = {}
        for found in active:
            for latent in found:
                counts[latent] = counts.get(latent, 0) + 1
        latent = max(counts, key=counts.get) if counts else None
        odd = next((i for i, found in enumerate(active) if latent not in found), 0)
        return odd if self.mode == "truthful" else (odd + 1) % len(excerpts)

    def answer(self, body: dict) -> tuple[int, dict]:
        messages = body["messages"]
        is_judge = messages[0]["content"].startswith("You check explanations")
        is_intruder = messages[0]["content"] == prompts.INTRUDER_SYSTEM
        with self.lock:
            self.requests["chat"] += 1
            self.requests["judge" if is_judge or is_intruder else "explain"] += 1
        if self.latency:
            time.sleep(self.latency)
        if body.get("model") != self.model:
            return 404, {"error": {"message": f"model {body.get('model')} not found"}}
        fault = self.fault()
        if fault:
            with self.lock:
                self.requests["faults"] += 1
        if fault == "fail":
            return 500, {"error": {"message": "injected failure"}}
        if fault == "hang":
            time.sleep(self.hang_seconds)
        if is_intruder:
            return 200, completion(str(self.intruder(prompts.excerpts_of(messages)) + 1), None)
        if not is_judge:
            text = "The marked tokens share a theme." if self.silent_explainer else \
                f"The marked tokens share a theme.\n[EXPLANATION]: {scripted_explanation(messages)}"
            return 200, completion(text, None)
        excerpts = prompts.excerpts_of(messages)
        explanation = prompts.explanation_of(messages)
        ps = [self.p_one(explanation, e) for e in excerpts]
        if fault == "malformed":
            text = "\n".join(f"{i}. {round(p)}" for i, p in enumerate(ps, start=1))
            tokens = [{"token": ch, "logprob": 0.0, "top_logprobs": [{"token": ch, "logprob": 0.0}]}
                      for ch in text]
            return 200, completion(text, tokens)
        if fault == "nonsense":
            tokens = [{"token": None, "logprob": "high", "top_logprobs": [{"token": 1, "logprob": None}]},
                      {"token": 0, "logprob": 5.0}, "not an object"]
            return 200, completion("[1]", tokens)
        tokens = [{"token": "[", "logprob": 0.0, "top_logprobs": []}]
        for i, p in enumerate(ps):
            chosen = "1" if p >= 0.5 else "0"
            top = [{"token": "1", "logprob": math.log(max(p, 1e-9))},
                   {"token": "0", "logprob": math.log(max(1 - p, 1e-9))}]
            tokens.append({"token": chosen, "logprob": math.log(max(p if chosen == "1" else 1 - p, 1e-9)),
                           "top_logprobs": top})
            tokens.append({"token": ", " if i < len(ps) - 1 else "]", "logprob": 0.0, "top_logprobs": []})
        text = "".join(t["token"] for t in tokens)
        return 200, completion(text, None if fault == "no_logprobs" else tokens)


def scripted_explanation(messages: list[dict]) -> str:
    return "scripted " + hashlib.sha256(messages[-1]["content"].encode()).hexdigest()[:12]


def completion(text: str, tokens: list[dict] | None) -> dict:
    choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
              "logprobs": {"content": tokens} if tokens is not None else None}
    return {"id": "scripted", "object": "chat.completion", "choices": [choice],
            "usage": {"prompt_tokens": 100, "completion_tokens": len(text), "total_tokens": 100 + len(text)}}


def truth_map(latents_dir=None, seed: int = 0, calibration_windows: int = 20) -> dict[tuple[str, str], int]:
    """(explanation, excerpt text as each LLM scorer shows it) → 1 for an activating window, 0 for a silent
    one, over the sampled latents of `latents_dir` (with the scripted explainer's explanations) and the
    known-answer set (with its true ones)."""
    from randsae.autointerp.calibration import known_answer_set
    from randsae.autointerp.scorers import scoring_set
    from randsae.lm.examples import NEGATIVES
    from randsae.lm.latents import open_latents
    from randsae.lm.models import load_tokenizer

    truth: dict[tuple[str, str], int] = {}

    def add(sets, decode, explanation=None, latent=None):
        if explanation is None:
            windows = [(decode(w.tokens), w.activations) for w in sets.explainer]
            explanation = scripted_explanation(prompts.explainer_messages(windows, sets.max_activation))
        for negatives in NEGATIVES:  # random silent windows and both kinds of hard ones
            shown = scoring_set(sets, decode, seed, negatives)
            for window, label in zip(shown.shown, shown.labels, strict=True):
                for kind in prompts.KINDS:
                    truth[explanation, prompts.excerpt(window, kind)] = label
                if label:  # the intruder's plain excerpts: the latents each is an activating window of
                    key = ("active", prompts.render(window.tokens))
                    truth[key] = truth.get(key, frozenset()) | {latent}

    known, explanations, decode = known_answer_set(calibration_windows, seed)
    for number, (sets, explanation) in enumerate(zip(known, explanations, strict=True)):
        add(sets, decode, explanation, ("known", number))
    if latents_dir is not None:
        records = open_latents(latents_dir)
        tokenizer = load_tokenizer(records.config["source"]["model"])

        def decode_ids(ids):
            return tokenizer.batch_decode([[i] for i in ids])

        for layer in records.layers:
            for row in records.sampled(layer):
                add(records.examples(layer, row.latent), decode_ids, latent=(layer, row.latent))
    return truth
