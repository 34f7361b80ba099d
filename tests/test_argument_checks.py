"""Bad arguments to the cells, `unroll`, a bidirectional layer's `apply`, `stack` and
`softmax_cross_entropy` fail at trace time in one line naming the argument, what was expected and
what was got; and the checks add nothing to the traced program.

The calls are traced abstractly (`jax.eval_shape` of ShapeDtypeStructs): the checks run where
they run under `jit`, and nothing is compiled.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnn_jax as rj
from rnn_jax import _checks, bidirectional, cells
from rnn_jax import unroll as unroll_module
from rnn_jax.softmax import plain_cross_entropy, softmax_cross_entropy

I, T, B, H = 3, 6, 3, 4
KEY = jax.ShapeDtypeStruct((2,), jnp.uint32)

LAYERS = {
    "elman": rj.elman(H),
    "lstm": rj.lstm(H),
    "gru": rj.gru(H),
    "stack": rj.stack([rj.lstm(H), rj.gru(H)]),
    "bidirectional": rj.bidirectional(rj.lstm(H), rj.gru(H)),
}
CELLS = ("elman", "lstm", "gru", "stack")  # the ones with `apply(params, carry, x)`

# Params of another cell for each, and the message's "must be ..., got ...", written out by hand.
ELMAN = "ElmanParams(w_x=[3, 4], w_h=[4, 4], b=[4])"
LSTM = "LSTMParams(w_x=[3, 16], w_h=[4, 16], b=[16])"
GRU = "GRUParams(w_x=[3, 12], w_h=[4, 12], b_x=[12], b_hn=[4])"
OTHER_PARAMS = {
    "elman": (rj.lstm(H), ELMAN, LSTM),
    "lstm": (rj.gru(H), LSTM, GRU),
    "gru": (rj.elman(H), GRU, ELMAN),
    "stack": (
        rj.stack([rj.lstm(H), rj.lstm(H)]),
        f"tuple({LSTM}, {GRU.replace('w_x=[3', 'w_x=[4')})",
        f"tuple({LSTM}, {LSTM.replace('w_x=[3', 'w_x=[4')})",
    ),
    "bidirectional": (
        rj.bidirectional(rj.gru(H), rj.lstm(H)),
        f"BidirectionalParams(fw={LSTM}, bw={GRU})",
        f"BidirectionalParams(fw={GRU}, bw={LSTM})",
    ),
}


def sds(*shape, dtype=jnp.float32):
    return jax.ShapeDtypeStruct(shape, dtype)


def params_of(layer, input_size=I):
    return jax.eval_shape(lambda key: layer.init(key, input_size), KEY)


def carry_of(layer, batch_shape):
    return jax.eval_shape(lambda: layer.initial_carry(batch_shape))


def run(layer, params, xs, carry=None, **options):
    """`unroll` (or the bidirectional layer's `apply`) traced, not run."""

    def f(params, xs, carry):
        if isinstance(layer, rj.Bidirectional):
            return layer.apply(params, xs, carry, **options)
        return rj.unroll(layer, params, xs, carry, **options)

    return jax.eval_shape(f, params, xs, carry)


def one_line(error) -> str:
    message = str(error.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize("kind", LAYERS)
def test_valid_arguments_pass_in_both_layouts_and_under_vmap(kind):
    layer, params = LAYERS[kind], params_of(LAYERS[kind])
    width = H * 2 if kind == "bidirectional" else H
    _, ys = run(layer, params, sds(T, B, I), carry_of(layer, (B,)), mask=np.ones((T, B), bool), time_major=True)
    assert ys.shape == (T, B, width)
    _, ys = run(layer, params, sds(B, T, I), carry_of(layer, (B,)), resets=np.zeros((B, T), bool), time_major=np.False_)
    assert ys.shape == (B, T, width)
    per_example = jax.vmap(lambda x, c: run(layer, params, x, c), in_axes=(1, 0))  # xs [T, I], carry [H]
    _, ys = jax.eval_shape(per_example, sds(T, B, I), carry_of(layer, (B,)))
    assert ys.shape == (B, T, width)


@pytest.mark.parametrize("kind", LAYERS)
def test_params_of_another_cell(kind):
    other, want, got = OTHER_PARAMS[kind]
    with pytest.raises(TypeError) as error:
        run(LAYERS[kind], params_of(other), sds(T, B, I))
    assert one_line(error) == f"params must be {want} as the cell's init makes them, got {got}"


@pytest.mark.parametrize("kind", LAYERS)
def test_params_of_another_hidden_size(kind):
    wide = {"elman": rj.elman(8), "lstm": rj.lstm(8), "gru": rj.gru(8)}
    wide["stack"] = rj.stack([rj.lstm(H), rj.gru(8)])
    wide["bidirectional"] = rj.bidirectional(rj.lstm(8), rj.gru(H))
    path = {"stack": "[1]", "bidirectional": ".fw"}.get(kind, "")
    with pytest.raises(ValueError) as error:
        run(LAYERS[kind], params_of(wide[kind]), sds(T, B, I))
    message = re.fullmatch(
        rf"params{re.escape(path)}\.w_[hx] must have shape \(4, (\d+)\) as the cell's init makes it, "
        r"got \((?:4|8), (\d+)\)",
        one_line(error),
    )
    assert message and int(message[2]) == 2 * int(message[1])  # the gates of hidden size 8, not 4


@pytest.mark.parametrize("time_major", [True, False])
@pytest.mark.parametrize("kind", LAYERS)
def test_input_of_another_width_names_xs_and_the_params_input_size(kind, time_major):
    xs = sds(T, B, 5) if time_major else sds(B, T, 5)
    with pytest.raises(ValueError) as error:
        run(LAYERS[kind], params_of(LAYERS[kind]), xs, time_major=time_major)
    axes = re.escape("[T, *batch, input]" if time_major else "[*batch, T, input]")
    assert re.fullmatch(
        rf"xs {axes} must have last dimension 3, the input size of the params "
        rf"\(params\S*\.w_x has shape \(3, \d+\)\), got shape {re.escape(str(xs.shape))}",
        one_line(error),
    )


@pytest.mark.parametrize("bad_batch", [(2,), (B, 1)])
@pytest.mark.parametrize("kind", LAYERS)
def test_carry_of_another_batch_shape(kind, bad_batch):
    layer = LAYERS[kind]
    first = {"lstm": ".h", "stack": "[0].h", "bidirectional": ".fw.h"}.get(kind, "")
    with pytest.raises(ValueError) as error:
        run(layer, params_of(layer), sds(B, T, I), carry_of(layer, bad_batch), time_major=False)
    assert one_line(error) == (
        f"carry{first} must have shape (3, 4) as the cell's initial_carry makes it for the batch shape (3,) "
        f"of xs [*batch, T, input] of shape (3, 6, 3), got {(*bad_batch, H)}"
    )


@pytest.mark.parametrize("kind", LAYERS)
def test_carry_of_another_hidden_size(kind):
    layer = LAYERS[kind]
    carry = jax.tree.map(lambda c: sds(B, H + 1), carry_of(layer, (B,)))
    with pytest.raises(ValueError) as error:
        run(layer, params_of(layer), sds(T, B, I), carry)
    assert re.fullmatch(r"carry\S* must have shape \(3, 4\) as .* of shape \(6, 3, 3\), got \(3, 5\)", one_line(error))


@pytest.mark.parametrize("kind", ["elman", "lstm", "bidirectional"])
def test_carry_of_another_cell(kind):
    other = {"elman": rj.lstm(H), "lstm": rj.elman(H), "bidirectional": rj.bidirectional(rj.gru(H), rj.lstm(H))}[kind]
    want, got = {
        "elman": ("[3, 4]", "LSTMCarry(h=[3, 4], c=[3, 4])"),
        "lstm": ("LSTMCarry(h=[3, 4], c=[3, 4])", "[3, 4]"),
        "bidirectional": (
            "BidirectionalCarry(fw=LSTMCarry(h=[3, 4], c=[3, 4]), bw=[3, 4])",
            "BidirectionalCarry(fw=[3, 4], bw=LSTMCarry(h=[3, 4], c=[3, 4]))",
        ),
    }[kind]
    with pytest.raises(TypeError) as error:
        run(LAYERS[kind], params_of(LAYERS[kind]), sds(T, B, I), carry_of(other, (B,)))
    assert one_line(error) == (
        f"carry must be {want} as the cell's initial_carry makes it for the batch shape (3,) "
        f"of xs [T, *batch, input] of shape (6, 3, 3), got {got}"
    )


@pytest.mark.parametrize("name", ["mask", "resets"])
@pytest.mark.parametrize("time_major", [True, False])
@pytest.mark.parametrize("kind", LAYERS)
def test_per_step_flags_of_another_shape_report_the_callers_shape(kind, time_major, name):
    xs = sds(T, B, I) if time_major else sds(B, T, I)
    flags = np.ones(xs.shape[:-1][::-1], bool)  # transposed: the other layout
    with pytest.raises(ValueError) as error:
        run(LAYERS[kind], params_of(LAYERS[kind]), xs, time_major=time_major, **{name: flags})
    axes = "[T, *batch]" if time_major else "[*batch, T]"
    want = f"{name} must be {axes} like xs without its last axis, {xs.shape[:-1]}, got shape {flags.shape}"
    assert one_line(error) == want


@pytest.mark.parametrize("kind", LAYERS)
def test_lengths_of_another_shape(kind):
    with pytest.raises(ValueError) as error:
        run(LAYERS[kind], params_of(LAYERS[kind]), sds(B, T, I), time_major=False, lengths=np.full((T,), 2))
    assert one_line(error) == "lengths must have the batch shape of xs, (3,) (xs is [*batch, T, input]), got shape (6,)"


FLAGS = [(k, f) for k in LAYERS for f in ("reverse", "time_major") if (k, f) != ("bidirectional", "reverse")]


@pytest.mark.parametrize("value", ["yes", 1, None])
@pytest.mark.parametrize("kind, flag", FLAGS)
def test_flags_that_are_not_bools(kind, flag, value):
    with pytest.raises(TypeError) as error:
        run(LAYERS[kind], params_of(LAYERS[kind]), sds(T, B, I), **{flag: value})
    assert one_line(error) == f"{flag} must be True or False, got {value!r} ({type(value).__name__})"


def apply(layer, params, carry, x):
    return jax.eval_shape(layer.apply, params, carry, x)


@pytest.mark.parametrize("kind", CELLS)
def test_cell_apply_refuses_params_of_another_cell_and_carry_or_x_of_another_size(kind):
    layer = LAYERS[kind]
    params, carry = params_of(layer), carry_of(layer, (B,))
    other, want, got = OTHER_PARAMS[kind]
    with pytest.raises(TypeError) as error:
        apply(layer, params_of(other), carry, sds(B, I))
    assert one_line(error) == f"params must be {want} as the cell's init makes them, got {got}"
    with pytest.raises(ValueError) as error:
        apply(layer, params, carry_of(layer, (2,)), sds(B, I))
    first = {"lstm": ".h", "stack": "[0].h"}.get(kind, "")
    assert one_line(error) == (
        f"carry{first} must have shape (3, 4) as the cell's initial_carry makes it for the batch shape (3,) "
        "of x of shape (3, 3), got (2, 4)"
    )
    with pytest.raises(ValueError) as error:
        apply(layer, params, carry, sds(B, 5))
    assert re.fullmatch(
        r"x must have last dimension 3, the input size of the params \(params\S*\.w_x has shape "
        r"\(3, \d+\)\), got shape \(3, 5\)",
        one_line(error),
    )


@pytest.mark.parametrize("kind", ["elman", "lstm", "gru"])
def test_cell_step_refuses_params_of_another_hidden_size(kind):
    layer, wide = LAYERS[kind], rj.CELLS[kind](8)
    gates = {"elman": 1, "lstm": 4, "gru": 3}[kind] * H
    with pytest.raises(ValueError) as error:
        jax.eval_shape(layer.step, params_of(wide), carry_of(layer, (B,)), sds(B, gates))
    want = f"params.w_h must have shape (4, {gates}) as the cell's init makes it, got (8, {2 * gates})"
    assert one_line(error) == want
    _, y = jax.eval_shape(layer.step, params_of(layer, input_size=7), carry_of(layer, (B,)), sds(B, gates))
    assert y.shape == (B, H)  # a step's input is projected: the params' input size is not its width


def test_softmax_cross_entropy_names_each_bad_argument():
    h, w, b, t = sds(6, 4), sds(4, 5), sds(5), sds(6, dtype=jnp.int32)
    cases = [
        (
            (sds(2, 3, 4), w, b, t),
            ValueError,
            "h must be [N, H] (leading axes flattened by the caller), got shape (2, 3, 4)",
        ),
        ((h, sds(3, 5), b, t), ValueError, "w must be [H, V] with H = 4 (h's last axis), got shape (3, 5)"),
        ((h, w, sds(4), t), ValueError, "b must be [V] = (5,) (w's last axis) or None, got shape (4,)"),
        (
            (h, w, b, sds(6, 1, dtype=jnp.int32)),
            ValueError,
            "targets must be [N] = (6,) (h's first axis), got shape (6, 1)",
        ),
        ((h, w, b, sds(6)), TypeError, "targets must be integer ids, got dtype float32"),
    ]
    for args, kind, message in cases:
        with pytest.raises(kind) as error:
            jax.eval_shape(softmax_cross_entropy, *args)
        assert one_line(error) == message


@pytest.mark.parametrize("loss", [softmax_cross_entropy, plain_cross_entropy])
def test_a_target_outside_the_vocabulary_gives_nan_never_a_finite_loss(loss):
    V = 5
    h, w = jnp.ones((3, 4)), jnp.full((4, V), 0.1)
    f = jax.jit(lambda t: loss(h, w, jnp.zeros(V), t))
    assert np.isfinite(f(jnp.array([0, 2, V - 1])))  # the same program, ids in range
    for bad in (V, V + 7, -1, -V, -V - 1):
        assert np.isnan(f(jnp.array([0, bad, 1]))), bad


def test_checks_add_nothing_to_the_traced_program(monkeypatch):
    """The jaxpr of a jitted `unroll` (and bidirectional `apply`) with every option is the same with
    the checks as with the checks replaced by no-ops that count their calls."""
    xs, flags = jnp.zeros((B, T, I)), jnp.ones((B, T), bool)
    options = {"lengths": jnp.full((B,), T), "mask": flags, "resets": flags, "time_major": False}

    def jaxprs():
        out = []
        for kind, layer in LAYERS.items():
            params = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params_of(layer))
            carry = layer.initial_carry((B,))
            if kind == "bidirectional":
                f = jax.jit(lambda p, x, c, layer=layer: layer.apply(p, x, c, **options))
            else:
                f = jax.jit(lambda p, x, c, layer=layer: rj.unroll(layer, p, x, c, reverse=True, **options))
            out.append(str(jax.make_jaxpr(f)(params, xs, carry)))
        return out

    _checks._made_by_init.cache_clear()  # the checked trace also traces the cells' init and initial_carry
    _checks._made_by_initial_carry.cache_clear()
    checked = jaxprs()
    calls = []
    for module in (_checks, cells, unroll_module, bidirectional):
        for name in ("check_params", "check_carry", "check_bool"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, lambda *a, **k: calls.append(a))
    unchecked = jaxprs()
    assert calls  # the no-ops stood where the checks are called
    assert checked == unchecked
