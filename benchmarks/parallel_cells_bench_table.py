"""The speed table of docs/parallel_cells.md from `python -m rnn_jax.bench preset=linear` runs.
Run: python benchmarks/parallel_cells_bench_table.py <bench dir> [<bench dir> ...]"""

import json
import sys

records = [r for d in sys.argv[1:] for r in json.load(open(f"{d}/bench.json"))["records"]]
ms = {(r["cell"], r["mode"], r["seq_len"], r["implementation"]): r["median_ms"] for r in records}
lengths = sorted({r["seq_len"] for r in records})
print(
    "| cell | mode | "
    + " | ".join(f"T = {t:,}: sequential / parallel ms (parallel ÷ sequential)" for t in lengths)
    + " |"
)
print("|---|---|" + "---|" * len(lengths))
for cell in ["lstm", "mingru", "minlstm", "lru", "rglru"]:
    for mode in ["train", "forward"]:
        cells = []
        for t in lengths:
            seq, par = ms.get((cell, mode, t, "rnn_jax_sequential")), ms.get((cell, mode, t, "rnn_jax_parallel"))
            cells.append(
                "–" if seq is None else f"{seq:.1f}" if par is None else f"{seq:.1f} / {par:.1f} ({par / seq:.2f}×)"
            )
        print(f"| {cell} | {mode} | " + " | ".join(cells) + " |")
