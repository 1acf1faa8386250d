"""A language model's next-token loss with one block's output replaced (docs/paper.md §2.2's CE loss score):
clean, with an SAE's reconstruction spliced in, and with the output zeroed."""

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch

from randsae.lm.activations import LanguageModel, block_outputs, transformer_blocks


@contextmanager
def replaced_block_output(model: LanguageModel, layer: int,
                          replace: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Inside the block, block `layer` outputs `replace(its output)` (batch × context × d_model)."""
    def hook(module, args, output):
        if isinstance(output, tuple):
            return (replace(output[0]), *output[1:])
        return replace(output)

    handle = transformer_blocks(model)[layer].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def log_probs(model: LanguageModel, inputs_embeds: torch.Tensor) -> torch.Tensor:
    return model(inputs_embeds=inputs_embeds, use_cache=False).logits.float().log_softmax(-1)


def logits_and_outputs(model: LanguageModel, inputs_embeds: torch.Tensor,
                       layers: list[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
    """The model's log-probabilities on `inputs_embeds` and the outputs of blocks `layers`."""
    captured: dict[int, torch.Tensor] = {}
    with block_outputs(model, layers, captured.__setitem__):
        return log_probs(model, inputs_embeds), captured


def next_token_loss(log_probs: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each next token (batch × (context − 1))."""
    return -log_probs[:, :-1].gather(-1, input_ids[:, 1:, None]).squeeze(-1)


def kl_from_clean(clean: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """KL(clean ‖ other) of the next-token distributions at every position (batch × context)."""
    return (clean.exp() * (clean - other)).sum(-1)
