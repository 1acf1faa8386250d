"""`randsae lm …` subcommands."""

import logging
import re

log = logging.getLogger("randsae")

_SUFFIXES = {"": 1, "k": 10**3, "m": 10**6, "b": 10**9}


def parse_count(text: str) -> int:
    """'1M', '100m', '500k', '2048' → an integer."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMbB]?)\s*", text)
    if not match or float(match[1]) <= 0:
        raise ValueError(f"cannot read {text!r} as a count like 2048, 500k or 1M.")
    return int(float(match[1]) * _SUFFIXES[match[2].lower()])


def add_lm_parser(sub, parser_class) -> None:
    lm = sub.add_parser("lm", help="language models: residual-stream activations")
    lm_sub = lm.add_subparsers(dest="lm_command", required=True, parser_class=parser_class)
    p = lm_sub.add_parser("activations", help="cache the residual stream of a model (or a random twin)")
    p.add_argument("--model", default="smollm2",
                   help="smollm2 (embedded), a .gguf file, a directory or a hub name")
    p.add_argument("--revision", default=None, help="hub revision of the trained model")
    p.add_argument("--variant", default="trained",
                   help="trained, rerandomized, rerandomized-no-embed, step0 or control")
    p.add_argument("--seed", type=int, default=0, help="seeds the variant and the context order")
    p.add_argument("--layers", default="all", help="'all' or a comma list of block indices")
    p.add_argument("--tokens", default="1M", help="how many tokens to cache (e.g. 500k, 1M, 100M)")
    p.add_argument("--dataset", default="shakespeare",
                   help="shakespeare (embedded), a .txt/.jsonl file, or a Hugging Face data set name")
    p.add_argument("--dataset-config", default=None)
    p.add_argument("--split", default="train")
    p.add_argument("--text-column", default="text")
    p.add_argument("--context-length", type=int, default=256)
    p.add_argument("--dtype", default="float16", help="cache dtype: float16, bfloat16 or float32")
    p.add_argument("--batch-size", type=int, default=8, help="contexts per forward pass")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--out", required=True)


def run_activations(args) -> None:
    from randsae.config import resolve_device
    from randsae.lm import load_model, make_variant
    from randsae.lm.activations import cache_activations, parse_layers
    from randsae.lm.text import contexts, documents, split_contexts

    num_tokens = parse_count(args.tokens)
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be a positive integer, not {args.batch_size}.")
    device = resolve_device(args.device)
    model, tokenizer = load_model(args.model, revision=args.revision, device=str(device))
    layers = parse_layers(args.layers, model.config.num_hidden_layers)
    model = make_variant(model, args.variant, seed=args.seed, revision=args.revision)
    wanted = -(-num_tokens // args.context_length)
    docs = documents(args.dataset, args.text_column, args.dataset_config, args.split)
    # 10% more contexts than asked, so that the held-out tenth leaves the asked-for number to cache
    rows = contexts(tokenizer, docs, args.context_length, max_contexts=wanted + wanted // 9 + 1)
    train, held_out = split_contexts(rows, eval_fraction=0.1, seed=args.seed)
    train = train[:wanted]
    if len(train) < wanted:
        log.warning("the text gives %d contexts; caching %d tokens, not %d", len(train),
                    len(train) * args.context_length, num_tokens)
    manifest = {"model": args.model, "revision": args.revision, "variant": model.randsae_variant,
                "seed": args.seed, "dataset": args.dataset, "dataset_config": args.dataset_config,
                "split": args.split, "text_column": args.text_column, "tokens": len(train) * args.context_length,
                "held_out_contexts": len(held_out)}
    out = cache_activations(model, train, layers, args.out, batch_size=args.batch_size, dtype=args.dtype,
                            manifest=manifest, progress=not args.quiet)
    log.info("cached %d tokens of layers %s in %s", len(train) * args.context_length, layers, out)


LM_COMMANDS = {"activations": run_activations}
