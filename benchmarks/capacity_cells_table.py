"""The table of docs/parallel_cells.md from a `sweep=capacity_cells` directory.
Run: python benchmarks/capacity_cells_table.py <sweep dir>"""

import json
import sys
from collections import defaultdict
from pathlib import Path

runs = defaultdict(dict)  # (cell, layers) -> hidden -> summary
for path in sorted(Path(sys.argv[1]).glob("*/summary.json")):
    s = json.loads(path.read_text())
    m = s["config"]["model"]
    runs[m["cell"], m["layers"]][m["hidden"]] = s

print(
    "| cell | layers | smallest H with >= 90% of seeds exact at 8 bits | seeds exact at 8 bits, H = 2 / 4 / 8 / 16 "
    "| longest exact carry chain, best seed (H) | exact at 10^3 / 10^4 random bits, best H |"
)
print("|---|---|---|---|---|---|")
for (cell, layers), by_h in sorted(
    runs.items(),
    key=lambda kv: (["elman", "lstm", "gru", "mingru", "minlstm", "lru", "rglru"].index(kv[0][0]), kv[0][1]),
):
    hs = sorted(by_h)
    solved = [h for h in hs if by_h[h]["success_rate"] >= 0.9]
    exact = " / ".join(
        f"{round(by_h[h]['success_rate'] * len(by_h[h]['seed_values']))}/{len(by_h[h]['seed_values'])}" for h in hs
    )
    chain, chain_h = max((max(by_h[h]["longest_exact_carry_chain"]), h) for h in hs)
    best = max(
        hs, key=lambda h: (by_h[h]["accuracy_at_bits"].get("10000", 0), by_h[h]["accuracy_at_bits"].get("1000", 0))
    )
    acc = by_h[best]["accuracy_at_bits"]
    print(
        f"| {cell} | {layers} | {solved[0] if solved else '> ' + str(hs[-1])} | {exact} | {chain:,} ({chain_h}) "
        f"| {acc.get('1000', 0):.2f} / {acc.get('10000', 0):.2f} (H {best}) |"
    )
