"""Published model shapes, as configs built offline: what `randsae baseline --plan` can plan for without the
hub (`randsae baseline --model pythia-6.9b-shape --plan …` after `write_shape`), and what the plan's tests
use. The shapes are those of the released Pythia configs (EleutherAI/pythia-*: GPT-NeoX, untied embeddings,
rotary on a quarter of each head, 2,048 positions)."""

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
