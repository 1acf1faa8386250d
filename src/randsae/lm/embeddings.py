"""A language model's token-embedding matrix as a data set of vectors (`embeddings:MODEL`)."""

from randsae.data.glove import WordVectors
from randsae.errors import BadInput

PREFIX = "embeddings:"


def is_embeddings(name: str | None) -> bool:
    return bool(name) and name.startswith(PREFIX)


def load(spec: str) -> WordVectors:
    """The input-embedding matrix of the model named after 'embeddings:' (anything `load_model` takes),
    one row per token id, with the tokens as words."""
    from randsae.lm.models import load_model

    name = spec.removeprefix(PREFIX)
    if not name:
        raise BadInput("give a model after 'embeddings:', e.g. embeddings:smollm2.")
    model, tokenizer = load_model(name)  # a transformers model: typed Any
    matrix = model.get_input_embeddings().weight.detach().float().cpu().numpy()
    words = tokenizer.convert_ids_to_tokens(list(range(len(matrix))))
    return WordVectors([str(w) for w in words], matrix, f"input embeddings of {name}")
