"""Human-readable output of the three bench modes (``--json`` prints the dicts instead)."""

from __future__ import annotations

from collections.abc import Callable

Echo = Callable[[str], None]


def _num(x: object, digits: int = 1) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return str(x)


def machine_block(m: dict, echo: Echo) -> None:
    echo("machine:")
    flags = " ".join(m.get("cpu_flags") or [])
    echo(f"  cpu        {m['cpu_count']} x {m['cpu_model'] or 'unknown'}" + (f"  ({flags})" if flags else ""))
    echo(f"  gpu        {m['gpu'] or 'none'}")
    echo(f"  python     {m['python']}   torch {m['torch'] or '-'}   sentence-transformers "
         f"{m['sentence_transformers'] or '-'}   llama-cpp-python {m['llama_cpp'] or 'not installed'}   "
         f"onnxruntime {m.get('onnxruntime') or '-'}")
    echo(f"  embedder   {m['embedder']}")


def embed_report(r: dict, echo: Echo) -> None:
    if len(r.get("embedders", ())) > 1 or r.get("processes", [1]) != [1]:
        return compare_report(r, echo)
    machine_block(r["machine"], echo)
    echo(f"\nraw embed_batch throughput, first {r['n']} texts of {r['data']} in file order "
         f"(one warm-up call per batch size):")
    llama = any(run["n_batch"] is not None for run in r["runs"])
    head = f"  {'n_batch':>12}" if llama else " "
    echo(f"{head}{'batch':>7}{'seconds':>10}{'texts/s':>10}{'tokens/s':>11}")
    for run in r["runs"]:
        nb = ""
        if llama:
            eff = run["n_batch_effective"]
            nb = f"{run['n_batch']}" + (f" (={eff})" if eff is not None and eff != run["n_batch"] else "")
            nb = f"  {nb:>12}"
        else:
            nb = " "
        echo(f"{nb}{run['batch_size']:>7}{run['seconds']:>10.2f}{run['texts_per_s']:>10.1f}"
             f"{_num(run['tokens_per_s'], 0):>11}")
    b = r["best"]
    at = f"n_batch {b['n_batch']}, " if b["n_batch"] is not None else ""
    echo(f"best: {at}batch size {b['batch_size']} at {b['texts_per_s']:.1f} texts/s"
         + (f", {b['tokens_per_s']:,.0f} tokens/s" if b["tokens_per_s"] is not None else ""))
    if r.get("tokens") is not None:
        echo(f"({r['tokens']} tokens in {r['n']} texts, {r['tokens'] / r['n']:.1f} per text)")
    if any(run["n_batch_effective"] not in (None, run["n_batch"]) for run in r["runs"]):
        echo("note: llama.cpp caps n_batch at n_ctx; raise n_ctx in the spec to use a larger n_batch")


def compare_report(r: dict, echo: Echo) -> None:
    """Several embedders (or one in several processes): texts/s per batch size, ratio to the first."""
    machine_block(r["machine"], echo)
    procs = max(r.get("processes", [1]))
    each = f"; 'xP': P processes at once, each all {r['n']} texts, texts/s summed" if procs > 1 else ""
    echo(f"\nraw embed_batch throughput, first {r['n']} texts of {r['data']} in file order, "
         f"median of {r['rounds']} interleaved round(s){each}:")
    sizes = [run["batch_size"] for run in r["embedders"][0]["runs"]]
    label = {id(e): e["embedder_spec"] + (f" x{e['processes']}" if e["processes"] > 1 else "")
             for e in r["embedders"]}
    width = max(len(x) for x in label.values()) + 2
    columns = "".join(f"{'batch ' + str(b):>12}" for b in sizes)
    echo(f"  {'embedder':<{width}}" + columns + f"{'best':>10}{'x first':>9}")
    for e in r["embedders"]:
        cells = "".join(f"{run['texts_per_s']:>12.1f}" for run in e["runs"])
        echo(f"  {label[id(e)]:<{width}}{cells}{e['best']['texts_per_s']:>10.1f}"
             f"{e['ratio_to_first']['best']:>9.2f}")
    echo("(texts/s; 'x first': best against the first embedder's best)")
    for spec, model_id in dict.fromkeys((e["embedder_spec"], e["embedder"]) for e in r["embedders"]):
        echo(f"  {spec}: model id {model_id}")


def e2e_report(r: dict, echo: Echo) -> None:
    machine_block(r["machine"], echo)
    bs = r["batch_sizes"]
    echo(f"\nend to end: {r['n']} texts, {r['workers']} worker(s), embedder {r['embedder_spec']}, "
         f"batch max {r['batch_max_size']} / {r['batch_max_wait_ms']} ms / {r['batch_max_tokens']} tokens")
    echo(f"  e2e throughput   {r['e2e_texts_per_s']:>10,.1f} texts/s  ({r['rows']} rows in {r['e2e_seconds']:.2f} s, "
         "first enqueue -> last commit)")
    echo(f"  raw throughput   {r['raw_texts_per_s']:>10,.1f} texts/s  (embed_batch in this process, same texts, "
         f"order and batch size; mean time of the raw passes before and after the e2e pass)")
    if r.get("rate"):
        echo(f"  e2e / raw        {r['ratio']:>10.3f}  (paced at {r['rate']:g} tasks/s: throughput is the "
             "producer's pace, not capacity)")
    else:
        echo(f"  e2e / raw        {r['ratio']:>10.3f}")
    if r.get("rounds", 1) > 1:
        each = "   ".join(f"{f['ratio']:.3f} ({f['e2e_texts_per_s']:,.0f} / {f['raw_texts_per_s']:,.0f})"
                           for f in r["round_figures"])
        echo(f"  rounds           {each}  (e2e / raw; round {r['median_round']}, the median, is reported)")
        if r.get("ratio_ci95"):
            lo, hi = r["ratio_ci95"]
            echo(f"  mean of rounds   {r['ratio_mean']:>10.3f}  (95 % confidence interval {lo:.3f}-{hi:.3f} over "
                 f"{r['rounds']} rounds: how far this host's noise leaves the ratio open)")
    if r.get("model_busy") is not None:
        echo(f"  model busy       {r['model_busy']:>10.3f}  (share of the e2e span the batch thread spent embedding + "
             f"heads; the model ran {r['inference_texts_per_s']:,.0f} texts/s in the worker)")
    if r.get("head_us_per_text") is not None:
        members = "+".join(r.get("head_members") or [])
        echo(f"  head cost        {r['head_us_per_text']:>10,.1f} us/text  ({r['head']} head {members}, timed in this "
             f"process: {100 * r['head_vs_embed']:.1f} % of the raw embed time per text)")
        if r.get("head_speedup_2_threads") is not None:
            echo(f"  head, 2 threads  {r['head_speedup_2_threads']:>10.2f} x  (texts/s of the head alone on 2 "
                 "threads at once against 1: what EMBEDCLF_TEXT_THREADS=2 can give where cores are idle)")
    cpu = r.get("worker_cpu_s") or {}
    if cpu:
        echo("  worker CPU s     " + "  ".join(f"{k}: {v:g}" for k, v in cpu.items())
             + "  (by thread; unnamed threads are the model's)")
    if r.get("postgres_cpu_s") is not None:
        echo(f"  Postgres CPU s   {r['postgres_cpu_s']:>10.3f}  ({r['postgres_us_per_row']:,.1f} us a row: the "
             "database server's backends for this run, the workers' writes and this command's polls; on the same "
             "cores when the server is local)")
    echo(f"  enqueue rate     {r['enqueue_texts_per_s']:>10,.1f} texts/s  (one producer process, "
         f"{r['enqueue_seconds']:.2f} s)")
    echo(f"  latency ms       p50 {r['p50_ms']:,.0f}   p95 {r['p95_ms']:,.0f}   p99 {r['p99_ms']:,.0f}   "
         f"max {r['latency_max_ms']:,.0f}  (completed_at - enqueued_at)")
    echo(f"  batches          {bs['batches']}: mean {bs['mean']}, min {bs['min']}, max {bs['max']}, "
         f"{100 * bs['full_fraction']:.0f} % full")
    echo("  batch sizes      " + "  ".join(f"{b['sizes']}: {b['batches']}" for b in bs["histogram"]))
    each = ", ".join(_num(x) for x in r["worker_rss_mb_each"])
    echo(f"  worker peak RSS  {each} MB (VmHWM)   ready after {', '.join(_num(x) for x in r['worker_ready_s'])} s")
    echo(f"  error rows       {r['error_rows']}" + (f"  (first: {r['first_error']})" if r["error_rows"] else ""))
    echo(f"  temp database {r['database']} (dropped), Redis DB {r['redis_db']} (flushed)")


def train_report(r: dict, echo: Echo) -> None:
    machine_block(r["machine"], echo)
    echo(f"\n{r['n']} texts, {r['n_labels']} labels, dim {r['dim']}, head {r['head']}")
    echo(f"  embed   {r['embed_seconds']:.2f} s  ({r['embed_texts_per_s']:.1f} texts/s, length-sorted batches)")
    echo(f"  train   {r['train_seconds']:.2f} s  ({r['epochs_run']} of {r['epochs_max']} epochs, "
         f"{r['seconds_per_epoch']:.3f} s/epoch, best epoch {r['best_epoch']}, val accuracy {r['val_accuracy']})")
