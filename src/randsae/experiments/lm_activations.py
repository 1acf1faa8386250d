"""`randsae lm activations`: the residual stream of a model (or a random twin) cached as shards."""

import logging
from pathlib import Path

from randsae.config import resolve_device
from randsae.lm.activations import cache_activations, check_cache_dtype, parse_layers
from randsae.lm.source import Source, open_source, record, write_held_out

log = logging.getLogger(__name__)


def cache_source(source: Source, layers: str, out: Path, dtype: str = "float16", batch_size: int = 8,
                 device: str = "auto", progress: bool = True) -> Path:
    """Cache `layers` of the source's model on its training contexts into OUT (resuming after the last
    finished shard), with the held-out contexts beside them."""
    check_cache_dtype(dtype)
    model, _, train, held_out = open_source(source, resolve_device(device))
    chosen = parse_layers(layers, model.config.num_hidden_layers)
    cache_activations(model, train, chosen, out, batch_size=batch_size, dtype=dtype,
                      manifest=record(source, model, train, held_out), progress=progress)
    write_held_out(out, held_out)
    log.info("cached %d tokens of layers %s in %s", train.numel(), chosen, out)
    return out
