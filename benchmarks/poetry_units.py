"""Two char-LM runs of the shipped Tang quatrains (`experiment=tang`, one with `task.unit=line`, one
with `task.unit=stream`) read both ways on the same validation text: each poem from the initial
state, and as char-rnn's stream. The table of docs/poetry.md.

    python benchmarks/poetry_units.py <line run dir> <stream run dir>
"""

from __future__ import annotations

import dataclasses
import sys

import jax

from rnn_jax.apps.sample import checkpoint_path, load_model
from rnn_jax.tasks.charlm.corpus import bits
from rnn_jax.tasks.charlm.model import make_evaluate, make_evaluate_packed
from rnn_jax.tasks.charlm.task import CharLMTask, load_data, load_poems


def main(runs) -> None:
    line = CharLMTask(corpus="builtin:tang_wujue", unit="line", seq_len=100, eval_batches=20)  # as the preset
    poems = load_poems(line, 32, jax.random.PRNGKey(0))
    stream = load_data(dataclasses.replace(line, unit="stream"), 32)
    print(f"validation: {int(poems.val.valid.sum())} poem targets; {stream.val.inputs.size} stream characters")
    for run in runs:
        model, params, vocab, meta = load_model(checkpoint_path(run, "best"))
        if vocab != poems.vocab:
            raise SystemExit(f"{run}: not a run of builtin:tang_wujue")
        as_poems = bits(float(jax.jit(make_evaluate_packed(model), static_argnums=2)(params, poems.val, 32)))
        as_stream = bits(float(jax.jit(make_evaluate(model, 100))(params, stream.val)))
        unit = meta["config"]["task"].get("unit", "stream")
        print(f"{run} (unit={unit}, step {meta['step']}): as poems {as_poems:.3f} bpc, as a stream {as_stream:.3f} bpc")


if __name__ == "__main__":
    main(sys.argv[1:])
