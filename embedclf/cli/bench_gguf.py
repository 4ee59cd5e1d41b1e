"""``embedclf bench make-gguf``: a GGUF with Qwen3-8B's shapes and random weights (see bench/synthetic_gguf.py)."""

from __future__ import annotations

import click


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def _count(n: int) -> str:
    return f"{n / 1e9:.2f} B" if n >= 1e9 else f"{n / 1e6:.2f} M"


@click.command("make-gguf")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False), help="GGUF file to write.")
@click.option("--preset", default="qwen3-8b", show_default=True, type=click.Choice(["qwen3-8b", "tiny"]),
              help="qwen3-8b: the real shapes (16.4 GB in F16); tiny: same architecture, 2 layers, a few MB.")
@click.option("--layers", type=click.IntRange(1), default=None, help="Override: transformer blocks.")
@click.option("--hidden", type=click.IntRange(1), default=None, help="Override: embedding size.")
@click.option("--ffn", type=click.IntRange(1), default=None, help="Override: feed-forward size.")
@click.option("--heads", type=click.IntRange(1), default=None, help="Override: query heads.")
@click.option("--kv-heads", type=click.IntRange(1), default=None, help="Override: key/value heads.")
@click.option("--head-dim", type=click.IntRange(1), default=None, help="Override: size of one head.")
@click.option("--vocab", type=click.IntRange(1), default=None, help="Override: vocabulary size (>= 260).")
@click.option("--context", type=click.IntRange(1), default=None, help="Override: training context length.")
@click.option("--dtype", default="f16", show_default=True, type=click.Choice(["f16", "q8_0"]),
              help="Type of the weight matrices (norms stay F32).")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0), help="Same seed, same file.")
@click.option("--dry-run", is_flag=True, help="Print shapes, parameter count and size; write nothing.")
@click.option("--force", is_flag=True, help="Overwrite an existing --out file.")
def make_gguf(out_path: str, preset: str, layers: int | None, hidden: int | None, ffn: int | None,
              heads: int | None, kv_heads: int | None, head_dim: int | None, vocab: int | None,
              context: int | None, dtype: str, seed: int, dry_run: bool, force: bool) -> None:
    """Write a GGUF with Qwen3-8B's architecture and shapes and random weights.

    For GPU throughput runs without the real weights: tokens/s carries over to the real model,
    texts/s does not (the synthetic tokenizer makes about twice as many tokens per text).
    """
    from embedclf.bench import synthetic_gguf as sg

    shape = sg.make_shape(preset, layers=layers, hidden=hidden, ffn=ffn, heads=heads, kv_heads=kv_heads,
                          head_dim=head_dim, vocab=vocab, context=context)
    shape.validate(dtype)
    n, n_body = shape.n_params(), shape.n_params_non_embedding()
    size = sg.estimate_bytes(shape, dtype)
    click.echo(f"{shape.name} ({sg.ARCH}): {shape.describe()}")
    click.echo(f"parameters: {n:,} ({_count(n)}; {_count(n_body)} without embeddings), "
               f"{len(shape.tensors())} tensors, {dtype.upper()} weights: about {_gb(size)}")
    if dry_run:
        return
    sg.check_target(out_path, shape, dtype, overwrite=force)  # fails before the progress bar appears
    from embedclf.progress import bar as progress_bar

    total = sum(sg.tensor_nbytes(t, dtype) for t in shape.tensors())
    bar = progress_bar(total=total, unit="B", desc="writing", unit_scale=True)
    n_tensors = len(shape.tensors())

    def progress(nbytes: int, done: int) -> None:
        bar.update(nbytes)
        bar.set_postfix_str(f"tensors {done}/{n_tensors}", refresh=False)

    try:
        result = sg.write_gguf(out_path, shape, dtype, seed, on_progress=progress, overwrite=force)
    finally:
        bar.close()
    click.echo(f"wrote {result.path}: {result.file_bytes:,} bytes ({_gb(result.file_bytes)}), "
               f"{result.n_tensors} tensors, {result.n_params:,} parameters, seed {seed}, in {result.seconds:.1f}s")
    click.echo(f"embed with: embedclf bench embed --data FILE --embedder "
               f"'llama:{result.path}?pooling=last&n_gpu_layers=999' --n-batch 512,2048")
