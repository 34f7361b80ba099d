"""Every seed the verifier proved, run on random sums through rnn_jax's own model.

    python benchmarks/proved_cross_check.py <sweep or run dir> [count=10000] [bits=256] [seed=0]

For each `verification.json` under the directory and each seed marked "proved", `count` random
`bits`-bit operand pairs are added by the trained model itself (rnn_jax's cells, the training dtype,
via `rnn_jax.apps.verify.trained_sums`) and compared with Python integers. A proof that disagreed
with any of them would be a bug in the verifier; prints one line per proved seed and exits 1 if any
seed adds a sum wrongly.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from rnn_jax.apps import verify as app
from rnn_jax.driver import checkpoint


def main(argv) -> int:
    if not argv:
        print(__doc__)
        return 2
    options = dict(a.split("=", 1) for a in argv[1:])
    count, bits, seed = int(options.get("count", 10_000)), int(options.get("bits", 256)), int(options.get("seed", 0))
    wrong_seeds = 0
    for run_dir in app.run_dirs(argv[0]):
        path = run_dir / "verification.json"
        if not path.is_file():
            continue
        proved = [i for i, r in enumerate(json.loads(path.read_text())["seeds"]) if r["verdict"] == "proved"]
        if not proved:
            continue
        config = json.loads((run_dir / "summary.json").read_text())["config"]
        state, _ = checkpoint.load(run_dir / "checkpoints" / "last")
        for i in proved:
            sums = app.trained_sums(state["train"]["params"], config, i)
            rng = np.random.default_rng(seed)
            a = [int.from_bytes(rng.bytes(bits // 8), "little") for _ in range(count)]
            b = [int.from_bytes(rng.bytes(bits // 8), "little") for _ in range(count)]
            got = []
            for start in range(0, count, 1000):  # batches of 1000 sums
                got += sums(a[start : start + 1000], b[start : start + 1000], bits)
            wrong = sum(g != x + y for g, x, y in zip(got, a, b))
            wrong_seeds += wrong > 0
            m = config["model"]
            print(
                f"{run_dir.name} seed index {i} ({m['cell']}, hidden {m['hidden']}): {wrong} of {count} wrong",
                flush=True,
            )
    return 1 if wrong_seeds else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
