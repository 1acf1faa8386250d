"""The `openai` backend end to end against a real OpenAI-compatible server on loopback: llama.cpp's
(`llama-cpp-python[server]`, built by `make test-http` into .venv-judge) serving the embedded SmolLM2 GGUF.
Run by `make test-http` (a CI step of its own: the server builds from source in 5–11 minutes on 2 cores)."""

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from randsae.autointerp.records import read_latents, read_summary
from randsae.cli import main
from randsae.lm.models import embedded_gguf

pytestmark = pytest.mark.llama_server


@pytest.fixture(scope="module")
def llama_server():
    python = os.environ.get("RANDSAE_LLAMA_PYTHON", ".venv-judge/bin/python")
    assert Path(python).is_file(), f"{python} is missing: run `make test-http`, which builds the server"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([python, "-m", "llama_cpp.server", "--model", str(embedded_gguf("smollm2")),
                               "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port),
                               "--n_ctx", "4096"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(120):
            try:
                if httpx.get(f"{url}/models", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None, "the llama.cpp server exited"
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_openai_backend_against_llama_cpp(llama_server, tiny_latents, tmp_path):
    out = tmp_path / "llama"
    args = ["lm", "autointerp", "--latents", str(tiny_latents), "--llm-url", llama_server, "--llm-model",
            "smollm2", "--latents-per-layer", "1", "--scorers", "fuzzing,detection", "--calibration-windows", "10",
            "--windows-per-prompt", "1",  # a bare digit per answer: five in a list are beyond a 135M judge, and a
            # judge that scores nothing fails the run
            "--bootstrap", "100", "--explainer-tokens", "48", "-q", "--out", str(out)]
    code = main(args)
    # a run in which the 135M judge wrote no explanation for any latent has scored nothing: it fails (exit 1), its
    # tables written; one with an explanation succeeds
    assert code == (0 if any(r.explanation for r in read_latents(out)) else 1)
    calls = [json.loads(line) for line in (out / "llm_calls.jsonl").read_text().splitlines()]
    answered = [c for c in calls if c["response"] is not None]
    assert answered, "the server answered nothing"
    # real answers, with the token logprobs the server returned, and the tokens it counted
    judged = [c for c in calls if c["kind"] == "judge"]
    assert judged and all(c["request"]["logprobs"] is True for c in judged)
    assert all(c["prompt_tokens"] > 0 for c in answered)
    summary = read_summary(out / "summary.csv")
    results = read_latents(out)
    assert len(results) == 2 and {r.scorer for r in summary} == {"fuzzing", "detection"}
    # a 135M judge does not keep to the answer format: whatever failed is counted, nothing crashed
    for row in summary:
        found = [s for r in results if r.layer == row.layer for s in r.results if s.scorer == row.scorer]
        assert row.windows_failed == sum(s.windows_failed for s in found)
        assert all(s.windows_scored + s.windows_failed == len(s.labels) for s in found)
        assert row.judge_at_chance is True and row.llm_calls == len(calls)
    # the rerun asks again only the calls that failed
    failed = {c["key"] for c in calls if c["response"] is None} - {c["key"] for c in answered}
    assert main(args) == (0 if any(r.explanation for r in read_latents(out)) else 1)
    again = [json.loads(line) for line in (out / "llm_calls.jsonl").read_text().splitlines()][len(calls):]
    assert {c["key"] for c in again} <= failed | {c["key"] for c in again if c["kind"] == "judge"}
    assert not {c["key"] for c in again} & {c["key"] for c in answered}
