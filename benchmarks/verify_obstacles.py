"""Why a seed stays "unknown": how fast the network contracts, and what the verifier's sets lose.

    python benchmarks/verify_obstacles.py <sweep or run dir> [seeds=JOB/SEED,...] [history=2] [depth=3] [runs=0]

For each seed (default: every seed that the directory's `verification.json` files mark proved or
unknown) one line with two kinds of figures. They are measurements in float64, not proofs.

- The network's own contraction along a random sum of 300 steps: the top per-step Lyapunov factor
  (QR of the Jacobian products) and the largest 2-norm of a product of 2, 4 and 8 consecutive
  Jacobians. A product above 1 means a perturbation can grow for that many steps before it
  shrinks; a certificate whose words are shorter must absorb that growth in the shape of its sets.
- One round of the certificate search's own sets (`search.initial_nodes` for `history`, `runs`, from
  the states of `search.simulate`), pushed through every word of `depth` pairs with the rigorous
  affine arithmetic (`certificate.node_images`). Each image, in its target node's coordinates
  (the principal directions of the label's states), is split into the offset of its center from
  the target box's middle, the part from the source set's extent carried linearly ("linear"), and
  the relaxation errors of the nonlinear units ("nonlinear"); the three add up to what
  `certificate.coordinates` bounds. Each is divided by the target box's radius in that direction
  and the median over images is printed for each box's widest and thinnest direction, with the
  thinnest radius and the relaxation error there. "gain" is the growth per word of the boxes'
  radii under the linear parts alone (`max_growth` over the node graph), measured at these first
  boxes with their slopes fixed: at or above 1, such boxes grown with those slopes cannot close.
"""

from __future__ import annotations

import json
import sys

import numpy as np

from rnn_jax.apps import verify as app
from rnn_jax.driver import checkpoint
from rnn_jax.verification import from_params
from rnn_jax.verification.certificate import inverse_bound, node_images, target_index
from rnn_jax.verification.network import NUMPY, PAIRS, Network, run, step
from rnn_jax.verification.search import initial_nodes, simulate


def jacobian(net: Network, state: np.ndarray, pair: int, h: float = 1e-6) -> np.ndarray:
    """d(next state)/d(state) at `state` `[n]` for input pair `pair`, by central differences."""
    n = state.shape[0]
    probes = np.concatenate([state + h * np.eye(n), state - h * np.eye(n)])
    after, _ = step(NUMPY, net, probes, PAIRS[np.full(2 * n, pair)])
    return (after[:n] - after[n:]).T / (2 * h)


def contraction(net: Network, steps: int = 300, windows=(2, 4, 8), seed: int = 1) -> dict:
    """Top Lyapunov factor per step and the largest ||J_w||_2 over windows of consecutive steps."""
    pairs = np.random.default_rng(seed).integers(0, 4, size=(steps, 1))
    states, _ = run(net, pairs)
    js = [jacobian(net, states[t - 1, 0], int(pairs[t, 0])) for t in range(1, steps)]
    q, log_growth = np.eye(net.state_size), np.zeros(net.state_size)
    for j in js:
        q, r = np.linalg.qr(j @ q)
        log_growth += np.log(np.abs(np.diag(r)))
    out = {"lyapunov": float(np.exp(log_growth.max() / len(js)))}
    for d in windows:
        worst = 0.0
        for t in range(len(js) - d + 1):
            product = np.eye(net.state_size)
            for j in js[t : t + d]:
                product = j @ product
            worst = max(worst, float(np.linalg.norm(product, 2)))
        out[f"norm{d}"] = worst
    return out


def image_parts(net: Network, nodes: list, history: int, depth: int, runs: int = 0) -> dict:
    """Every word of `depth` pairs from every node, each image in its target's coordinates, split
    into offset, linear and nonlinear half-extents `[R, n]` (their sum bounds the image around the
    target box's middle); also `source`, `target`, `radius` (the nodes' `[N, n]`) and `linear_map`
    (`[R, n, n]`: target half-extent per unit of source radius)."""
    part = node_images(net, nodes, depth, history, runs)
    target = target_index(nodes, part.carry, part.history, part.run)
    keep = target >= 0  # images whose label no simulated state had are left out
    n = net.state_size
    W = np.stack([inverse_bound(node.basis)[0] for node in nodes])[target[keep]]
    center = np.stack([node.center for node in nodes])[target[keep]]
    lo, hi = np.stack([node.lo for node in nodes]), np.stack([node.hi for node in nodes])
    radius, middle = (hi - lo) / 2, (hi + lo) / 2
    G, c, e = part.form.G[keep], part.form.c[keep], part.form.e[keep]
    source, tgt = part.start[keep], target[keep]
    linear_map = np.abs(np.einsum("rij,rjk->rik", W, G[:, :, :n])) / np.maximum(radius[source], 1e-300)[:, None, :]
    return {
        "offset": np.abs(np.einsum("rij,rj->ri", W, c - center) - middle[tgt]),
        "linear": np.einsum("rij,rj->ri", linear_map, radius[source]),
        "nonlinear": np.abs(np.einsum("rij,rjk->rik", W, G[:, :, n:])).sum(-1) + np.einsum("rij,rj->ri", np.abs(W), e),
        "source": source,
        "target": tgt,
        "radius": radius,
        "linear_map": linear_map,
        "unlabelled": int((~keep).sum()),
    }


def set_losses(net: Network, history: int, depth: int, runs: int = 0, seed: int = 0) -> dict:
    """One rigorous round of the search's initial sets: per-direction medians of the image parts
    over the target radius, and the linear gain per word (see the module docstring)."""
    samples = simulate(net, np.random.default_rng(seed), 128, 64, max(history, 4))
    nodes = initial_nodes(samples, history, runs)
    p = image_parts(net, nodes, history, depth, runs)
    radius, source, tgt = p["radius"], p["source"], p["target"]
    out = {"nodes": len(nodes), "unlabelled": p["unlabelled"]}
    if not len(tgt):
        keys = [f"{a}_{b}" for a in ("offset", "linear", "nonlinear") for b in ("wide", "thin")]
        return out | dict.fromkeys(keys + ["gain", "thin", "error_thin"], np.nan)
    rows = np.arange(len(tgt))
    thinnest, widest = radius[tgt].argmin(axis=1), radius[tgt].argmax(axis=1)
    for name in ("offset", "linear", "nonlinear"):
        ratio = p[name] / np.maximum(radius[tgt], 1e-300)
        out[f"{name}_wide"] = float(np.median(ratio[rows, widest]))
        out[f"{name}_thin"] = float(np.median(ratio[rows, thinnest]))
    out["thin"] = float(np.median(radius[tgt][rows, thinnest]))  # the target boxes' thinnest radius
    out["error_thin"] = float(np.median(p["nonlinear"][rows, thinnest]))  # the relaxation error there
    gain = max_growth(p["linear_map"], source, tgt, len(radius))
    out["gain"] = gain
    return out


def max_growth(linear_map: np.ndarray, source: np.ndarray, target: np.ndarray, nodes: int, rounds: int = 200) -> float:
    """Growth rate per word of r_t = max over edges (s -> t, matrix A) of A r_s (r `[nodes, n]` >= 0,
    `linear_map` `[E, n, n]` >= 0): power iteration, the last quarter of the rounds averaged
    (geometrically) so that a periodic graph gives its mean rate."""
    r, growth = np.ones((nodes, linear_map.shape[-1])), []
    for _ in range(rounds):
        new = np.zeros_like(r)
        np.maximum.at(new, target, np.einsum("rij,rj->ri", linear_map, r[source]))
        growth.append(float(new.max() / r.max()))
        r = new / new.max()
    return float(np.exp(np.mean(np.log(growth[-rounds // 4 :]))))


def seeds_of(path, wanted) -> list:
    """`(run_dir, seed index, verdict)` for the `wanted` "JOB/SEED" strings, else for the proved and
    unknown seeds; a wanted seed that is not there is an error."""
    found = []
    for run_dir in app.run_dirs(path):
        verdicts = run_dir / "verification.json"
        if not verdicts.is_file():
            continue
        for i, r in enumerate(json.loads(verdicts.read_text())["seeds"]):
            label = f"{run_dir.name}/{i}"
            if (label in wanted) if wanted else r["verdict"] in ("proved", "unknown"):
                found.append((run_dir, i, r["verdict"]))
    missing = wanted - {f"{d.name}/{i}" for d, i, _ in found}
    if missing:
        raise SystemExit(f"error: seeds={','.join(sorted(missing))}: no such job/seed with a verification.json")
    return found


def main(argv) -> int:
    if not argv:
        print(__doc__)
        return 2
    options = dict(a.split("=", 1) for a in argv[1:])
    wanted = set(options["seeds"].split(",")) if "seeds" in options else set()
    history, depth, runs = (int(options.get(k, v)) for k, v in (("history", 2), ("depth", 3), ("runs", 0)))
    print(
        "job/seed verdict cell hidden | lyapunov ||J_2|| ||J_4|| ||J_8|| | gain"
        " | over the radius, widest direction: offset linear nonlinear; thinnest: offset linear nonlinear"
        " | thinnest radius, relaxation error there"
    )
    loaded = {}
    for run_dir, i, verdict in seeds_of(argv[0], wanted):
        if run_dir not in loaded:
            loaded[run_dir] = (
                json.loads((run_dir / "summary.json").read_text())["config"]["model"],
                checkpoint.load(run_dir / "checkpoints" / "last")[0]["train"]["params"],
            )
        model, params = loaded[run_dir]
        net = from_params(params, model, i if app._batched(params) else None)
        k, s = contraction(net), set_losses(net, history, depth, runs)
        print(
            f"{run_dir.name}/{i} {verdict} {model['cell']} {model['hidden']} | {k['lyapunov']:.2f} {k['norm2']:.2f} "
            f"{k['norm4']:.2f} {k['norm8']:.2f} | {s['gain']:.2f} | "
            + " ".join(
                f"{s[f'{part}_{side}']:.2g}" for side in ("wide", "thin") for part in ("offset", "linear", "nonlinear")
            )
            + f" | {s['thin']:.2g} {s['error_thin']:.2g}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
