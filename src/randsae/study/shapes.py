"""Published model shapes, as configs built offline: what `randsae baseline --plan` can plan for without the
hub (`randsae baseline --model pythia-6.9b-shape --plan …` after `write_shape`), and what the plan's tests
use. The shapes are those of the released Pythia configs (EleutherAI/pythia-*: GPT-NeoX, untied embeddings,
rotary on a quarter of each head, 2,048 positions). `ModelShape`: a model's shape as the plan reads it from
its config."""

from dataclasses import dataclass
from pathlib import Path

PYTHIA = {  # name → (layers, d_model, heads, vocabulary)
    "pythia-70m": (6, 512, 8, 50304),
    "pythia-160m": (12, 768, 12, 50304),
    "pythia-410m": (24, 1024, 16, 50304),
    "pythia-1b": (16, 2048, 8, 50304),
    "pythia-1.4b": (24, 2048, 16, 50304),
    "pythia-2.8b": (32, 2560, 32, 50304),
    "pythia-6.9b": (32, 4096, 32, 50432),
    "pythia-12b": (36, 5120, 40, 50688),
}


def pythia_config(name: str):
    from transformers import GPTNeoXConfig

    layers, d_model, heads, vocab = PYTHIA[name]
    config = GPTNeoXConfig(num_hidden_layers=layers, hidden_size=d_model, num_attention_heads=heads,
                           intermediate_size=4 * d_model, vocab_size=vocab, max_position_embeddings=2048,
                           use_parallel_residual=True, tie_word_embeddings=False,
                           rope_parameters={"rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                                            "rope_type": "default"})
    config.name_or_path = f"EleutherAI/{name}"
    return config


def write_shape(name: str, directory: str | Path) -> Path:
    """A directory holding only `name`'s config.json (no weights): enough for --plan."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pythia_config(name).save_pretrained(directory)
    return directory


def dtype_bytes(name: str) -> int:
    """Bytes per value of a float type by its name (the model's and the cache's: float32, float16, bfloat16)."""
    import torch

    from randsae.lm.models import DTYPES

    return torch.finfo(DTYPES[name]).bits // 8


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a model, from its config alone."""
    name: str
    layers: int
    d_model: int
    vocab: int
    parameters: int
    embedding_parameters: int

    def forward_flops(self, context_length: int, blocks: int | None = None) -> float:
        """FLOPs of one token's forward pass (see the module's docstring): the whole model's, or only through
        its first `blocks` blocks (a pass that stops after the last layer it reads, with no unembedding)."""
        body = self.parameters - self.embedding_parameters
        if blocks is None:
            return 2 * body + 2 * self.vocab * self.d_model + 2 * self.layers * context_length * self.d_model
        return (2 * body + 2 * self.layers * context_length * self.d_model) * blocks / self.layers

    def weight_bytes(self, dtype: str) -> int:
        return self.parameters * dtype_bytes(dtype)


def model_shape(config, name: str) -> ModelShape:
    """The shape of the model `config` describes: its parameters counted on the meta device (nothing is
    allocated), its embeddings (input and, untied, output) apart."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    seen, total = set(), 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    embedding = model.get_input_embeddings().weight.numel()
    output = model.get_output_embeddings()
    if output is not None and output.weight is not model.get_input_embeddings().weight:
        embedding += output.weight.numel()
    return ModelShape(name, config.num_hidden_layers, config.hidden_size, config.vocab_size, total, embedding)
