"""The LSTM (§5.2) and the LSTM LM: gradient checks of the gates, the step, the sequence (with dh0, dc0),
the stack and the whole model; broken backwards caught; torch.nn.LSTM as a reference; carried state;
dtypes; bad input."""

import numpy as np
import pytest

from minilm import lstm, lstm_lm
from minilm.activations import sigmoid_backward, tanh_backward
from minilm.cases import lstm as C
from minilm.gradcheck import TOLERANCE, check_pair
from minilm.linear import linear_backward
from minilm.optim import adam_step, init_state

BROKEN = 1e-4  # a broken backward must be off by far more than this (exact ones are <= 1e-7)
gates_backward = lstm.lstm_gates_backward  # the right one, kept before any test replaces it


def check(piece, backward=None, inputs=None):
    """check_pair of one LSTM piece ("gates", "step", "sequence", "stack") on its case's inputs."""
    forward, default_backward, make, names = {
        "gates": (C.flat_gates, C.flat_gates_backward, C.gates_inputs, ["a", "c_prev"]),
        "step": (C.flat_step, C.flat_step_backward, C.step_inputs, C.STEP_NAMES),
        "sequence": (C.flat_sequence, C.flat_sequence_backward, C.sequence_inputs, C.SEQUENCE_NAMES),
        "stack": (C.flat_stack, C.flat_stack_backward, C.stack_inputs, C.stack_names()),
    }[piece]
    return check_pair(forward, backward or default_backward, inputs if inputs is not None else make(), names)


@pytest.mark.parametrize("piece,initial_state", [("gates", []), ("step", ["dh_prev", "dc_prev"]),
                                                  ("sequence", ["dh0", "dc0"]),
                                                  ("stack", ["dh0[0]", "dc0[0]", "dh0[1]", "dc0[1]"])])
def test_gradients_of_the_pieces(piece, initial_state):
    errors = check(piece)
    assert set(initial_state) <= set(errors) and max(errors.values()) <= TOLERANCE, errors


@pytest.mark.parametrize("B,T,D,Hd", [(1, 1, 2, 3), (3, 6, 2, 2), (2, 2, 5, 1)])
def test_sequence_gradients_other_shapes(B, T, D, Hd):
    errors = check("sequence", inputs=C.sequence_inputs(B, T, D, Hd))
    assert max(errors.values()) <= TOLERANCE, errors


def test_three_layer_stack_of_other_widths():
    errors = check_pair(C.flat_stack, C.flat_stack_backward, C.stack_inputs(B=2, T=2, D=4, Hd=2, L=3),
                        C.stack_names(3))
    assert max(errors.values()) <= TOLERANCE, errors


def test_whole_lstm_lm_every_parameter():
    errors = C.check_lstm_lm()
    assert set(errors) == {"d" + k for k in lstm_lm.param_shapes(C.LM)}
    assert max(errors.values()) <= TOLERANCE, errors


# ---- deliberately broken backwards: each must be caught by the same checker ----


def output_gate_derivative_dropped(dh, dc, cache):  # do taken as the gradient of a_o: sigmoid' forgotten
    i, f, g, o, c_prev, tc, cache_i, cache_f, cache_g, cache_o, cache_tc = cache
    da, dc_prev = gates_backward(dh, dc, cache)
    Hd = dh.shape[1]
    return np.concatenate([da[:, : 3 * Hd], dh * tc], axis=1), dc_prev


def forget_gate_uses_new_cell(dh, dc, cache):  # df = dc_t * c_t instead of dc_t * c_{t-1}
    i, f, g, o, c_prev, tc, *caches = cache
    return gates_backward(dh, dc, (i, f, g, o, f * c_prev + i * g, tc, *caches))


def candidate_derivative_of_sigmoid(dh, dc, cache):  # g is a tanh: its derivative is 1 - g^2, not g (1 - g)
    i, f, g, o, c_prev, tc, cache_i, cache_f, cache_g, cache_o, cache_tc = cache
    da, dc_prev = gates_backward(dh, dc, cache)
    Hd = dh.shape[1]
    dc_t = dc + tanh_backward(dh * o, cache_tc)
    return np.concatenate([da[:, : 2 * Hd], sigmoid_backward(dc_t * i, g), da[:, 3 * Hd :]], axis=1), dc_prev


def cell_tanh_derivative_dropped(dh, dc, cache):  # dc_t = dc + dh * o, as if h_t = o * c_t
    i, f, g, o, c_prev, tc, cache_i, cache_f, cache_g, cache_o, cache_tc = cache
    return gates_backward(dh, dc, (i, f, g, o, c_prev, tc, cache_i, cache_f, cache_g, cache_o, np.zeros_like(tc)))


def cell_path_dropped(dh, dc, cache):  # dc_{t-1} = 0: the cell's memory carries no gradient back
    da, dc_prev = gates_backward(dh, dc, cache)
    return da, 0 * dc_prev


BROKEN_GATES = [output_gate_derivative_dropped, forget_gate_uses_new_cell, candidate_derivative_of_sigmoid,
                cell_tanh_derivative_dropped, cell_path_dropped]


@pytest.mark.parametrize("piece,broken", [(p, b) for p in ("gates", "step") for b in BROKEN_GATES]
                         + [("sequence", output_gate_derivative_dropped), ("sequence", cell_path_dropped),
                            ("stack", forget_gate_uses_new_cell)],
                         ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_broken_gate_derivative_is_caught(monkeypatch, piece, broken):
    monkeypatch.setattr(lstm, "lstm_gates_backward", broken)
    errors = check(piece)
    assert max(errors.values()) > BROKEN, errors


def bptt(dhs, cache, dstate=None, carry_dh=True, shift=True):
    """lstm_backward rewritten with switches that break it: no recurrence for dh, or dW_h from h_t."""
    cache_x, h0, hs, Wh, steps = cache
    B, T, Hd = hs.shape
    dh, dc = (np.zeros_like(h0), np.zeros_like(h0)) if dstate is None else dstate
    da = np.empty((B, T, 4 * Hd))
    for t in reversed(range(T)):
        da[:, t], dc = lstm.lstm_gates_backward(dhs[:, t] + dh, dc, steps[t])
        dh = da[:, t] @ Wh.T if carry_dh else 0 * dh
    h_prev = np.concatenate([h0[:, None], hs[:, :-1]], axis=1) if shift else hs
    dWh = h_prev.reshape(-1, Hd).T @ da.reshape(-1, 4 * Hd)
    dx, dWx, db = linear_backward(da, cache_x)
    return dx, dh, dc, dWx, dWh, db


def test_rewritten_bptt_is_right_and_its_breaks_are_caught():
    inputs = C.sequence_inputs()
    hs, _, cache = lstm.lstm_forward(*inputs)
    dhs = np.random.default_rng(5).standard_normal(hs.shape)
    for ours, rewritten in zip(lstm.lstm_backward(dhs, cache), bptt(dhs, cache), strict=True):
        np.testing.assert_array_equal(ours, rewritten)  # with the switches on, it is the right backward

    def caught(**switch):
        backward = lambda d, c: C.flat_sequence_backward(d, c, lambda *a: bptt(*a, **switch))  # noqa: E731
        return check_pair(C.flat_sequence, backward, inputs, C.SEQUENCE_NAMES, wrt=[0, 1, 4])  # x, h0, Wh

    no_recurrence = caught(carry_dh=False)
    assert no_recurrence["dWh"] > BROKEN and no_recurrence["dh0"] > BROKEN
    off_by_one = caught(shift=False)
    assert off_by_one["dWh"] > BROKEN and off_by_one["dx"] <= TOLERANCE and off_by_one["dh0"] <= TOLERANCE


def stack_without_passing_down(dhs, cache, dstate=None):
    """Every layer is given the top layer's dhs instead of the dx of the layer above it."""
    L = len(cache)
    dstate = [None] * L if dstate is None else dstate
    grads = [lstm.lstm_backward(dhs, cache[l], dstate[l]) for l in range(L)]
    return grads[0][0], [g[1:3] for g in grads], [g[3:] for g in grads]


def test_stack_that_does_not_pass_the_gradient_down_is_caught(monkeypatch):
    monkeypatch.setattr(lstm, "lstm_stack_backward", stack_without_passing_down)
    errors = check("stack")
    assert errors["dWx[0]"] > BROKEN and errors["dh0[0]"] > BROKEN and errors["dWx[1]"] <= TOLERANCE, errors


def test_lm_with_one_gradient_scaled_is_caught(key="lstm.0.Wh"):
    def scaled(params, cfg, idx, targets, state=None):
        loss, grads = lstm_lm.loss_and_grads(params, cfg, idx, targets, state=state)
        return loss, {**grads, key: 1.01 * grads[key]}

    errors = C.check_lstm_lm(loss_and_grads=scaled)
    assert errors["d" + key] > BROKEN and all(e <= TOLERANCE for k, e in errors.items() if k != "d" + key), errors


def test_lm_with_a_broken_gate_is_caught(monkeypatch):
    monkeypatch.setattr(lstm, "lstm_gates_backward", output_gate_derivative_dropped)
    errors = C.check_lstm_lm()
    assert errors["dlstm.0.Wx"] > BROKEN and errors["dlstm.1.Wh"] > BROKEN, errors


# ---- torch.nn.LSTM as the reference (float64, the same weights) ----


def torch_lstm_from(layers, D, Hd, rng):
    """torch.nn.LSTM (gate order i, f, g, o) holding our weights: weight_ih = Wx^T, weight_hh = Wh^T, and the
    bias b split at random into bias_ih + bias_hh (torch only ever uses their sum)."""
    torch = pytest.importorskip("torch")
    net = torch.nn.LSTM(D, Hd, num_layers=len(layers), batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for l, (Wx, Wh, b) in enumerate(layers):
            bias_hh = rng.standard_normal(4 * Hd)
            getattr(net, f"weight_ih_l{l}").copy_(torch.from_numpy(Wx.T.copy()))
            getattr(net, f"weight_hh_l{l}").copy_(torch.from_numpy(Wh.T.copy()))
            getattr(net, f"bias_ih_l{l}").copy_(torch.from_numpy(b - bias_hh))
            getattr(net, f"bias_hh_l{l}").copy_(torch.from_numpy(bias_hh))
    return net


def test_matches_torch_lstm_forward_and_backward():
    torch = pytest.importorskip("torch")
    r = np.random.default_rng(0)
    B, T, D, Hd, L = 3, 7, 4, 5, 2
    layers = [lstm.lstm_init(r, D if l == 0 else Hd, Hd, np.float64, forget_bias=r.standard_normal())
              for l in range(L)]
    layers = [(Wx, Wh, b + 0.3 * r.standard_normal(b.shape)) for Wx, Wh, b in layers]
    x, h0, c0 = r.standard_normal((B, T, D)), r.standard_normal((L, B, Hd)), r.standard_normal((L, B, Hd))
    hs, final, cache = lstm.lstm_stack_forward(x, [(h0[l], c0[l]) for l in range(L)], layers)

    net = torch_lstm_from(layers, D, Hd, r)
    xt, h0t, c0t = (torch.tensor(a, requires_grad=True) for a in (x, h0, c0))
    out, (hn, cn) = net(xt, (h0t, c0t))
    np.testing.assert_allclose(hs, out.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.stack([h for h, _ in final]), hn.detach().numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.stack([c for _, c in final]), cn.detach().numpy(), rtol=0, atol=1e-10)

    dhs, dhn, dcn = r.standard_normal(hs.shape), r.standard_normal((L, B, Hd)), r.standard_normal((L, B, Hd))
    ((out * torch.from_numpy(dhs)).sum() + (hn * torch.from_numpy(dhn)).sum()
     + (cn * torch.from_numpy(dcn)).sum()).backward()
    dx, dstate0, dlayers = lstm.lstm_stack_backward(dhs, cache, [(dhn[l], dcn[l]) for l in range(L)])
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.stack([g for g, _ in dstate0]), h0t.grad.numpy(), rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.stack([g for _, g in dstate0]), c0t.grad.numpy(), rtol=0, atol=1e-10)
    for l, (dWx, dWh, db) in enumerate(dlayers):
        np.testing.assert_allclose(dWx, getattr(net, f"weight_ih_l{l}").grad.numpy().T, rtol=0, atol=1e-10)
        np.testing.assert_allclose(dWh, getattr(net, f"weight_hh_l{l}").grad.numpy().T, rtol=0, atol=1e-10)
        np.testing.assert_allclose(db, getattr(net, f"bias_ih_l{l}").grad.numpy(), rtol=0, atol=1e-10)
        np.testing.assert_allclose(db, getattr(net, f"bias_hh_l{l}").grad.numpy(), rtol=0, atol=1e-10)


def test_lm_matches_the_texts_torch_model():
    """§5.2's LanguageModel: nn.Embedding -> nn.LSTM(d_model, d_model, n_layers) -> nn.Linear."""
    torch = pytest.importorskip("torch")
    V, d, L = 11, 6, 2
    cfg = lstm_lm.LSTMConfig(vocab_size=V, n_embd=d, n_hidden=d, n_layer=L)
    r = np.random.default_rng(1)
    params = lstm_lm.init_params(cfg, r, np.float64)
    idx = r.integers(0, V, (2, 9))
    layers = [(params[f"lstm.{l}.Wx"], params[f"lstm.{l}.Wh"], params[f"lstm.{l}.b"]) for l in range(L)]
    net = torch_lstm_from(layers, d, d, r)
    emb, fc = torch.nn.Embedding(V, d, dtype=torch.float64), torch.nn.Linear(d, V, dtype=torch.float64)
    with torch.no_grad():
        emb.weight.copy_(torch.from_numpy(params["embed"]))
        fc.weight.copy_(torch.from_numpy(params["W_out"].T.copy()))
        fc.bias.copy_(torch.from_numpy(params["b_out"]))
        expected = fc(net(emb(torch.from_numpy(idx)))[0]).numpy()
    np.testing.assert_allclose(lstm_lm.forward(params, cfg, idx)[0], expected, rtol=0, atol=1e-10)


# ---- carried state (truncated BPTT), init, stability, dtypes ----


def test_carried_state_continues_the_sequence_exactly():
    cfg = lstm_lm.LSTMConfig(vocab_size=9, n_embd=4, n_hidden=5, n_layer=2)
    r = np.random.default_rng(2)
    params = lstm_lm.init_params(cfg, r, np.float64)
    idx = r.integers(0, 9, (3, 12))
    whole, cache = lstm_lm.forward(params, cfg, idx)
    first, c1 = lstm_lm.forward(params, cfg, idx[:, :5])
    second, c2 = lstm_lm.forward(params, cfg, idx[:, 5:], state=lstm_lm.final_state(c1))
    np.testing.assert_allclose(np.concatenate([first, second], axis=1), whole, rtol=1e-12, atol=1e-12)
    for (h, c), (h2, c2_) in zip(lstm_lm.final_state(cache), lstm_lm.final_state(c2), strict=True):
        np.testing.assert_allclose(h, h2, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(c, c2_, rtol=1e-12, atol=1e-12)
    fresh, _ = lstm_lm.forward(params, cfg, idx[:, 5:])
    assert np.abs(fresh - second).max() > 1e-3  # the state matters


def test_loss_grads_and_state_agrees_with_loss_and_grads():
    cfg = lstm_lm.LSTMConfig(vocab_size=9, n_embd=4, n_hidden=5, n_layer=2)
    r = np.random.default_rng(3)
    params = lstm_lm.init_params(cfg, r, np.float64)
    idx, targets = r.integers(0, 9, (2, 6)), r.integers(0, 9, (2, 6))
    _, _, state = lstm_lm.loss_grads_and_state(params, cfg, idx, targets)
    loss, grads, state2 = lstm_lm.loss_grads_and_state(params, cfg, targets, idx, state=state)
    loss_b, grads_b = lstm_lm.loss_and_grads(params, cfg, targets, idx, state=state)
    assert loss == loss_b and all(np.array_equal(grads[k], grads_b[k]) for k in grads)
    assert len(state2) == 2 and all(h.shape == (2, 5) and c.shape == (2, 5) for h, c in state2)


def test_carrying_state_lets_the_model_remember_past_the_window():
    """A stream ... a x x x x b x x x x a ...: the token after four x's is the marker not seen last,
    5 steps back, so windows of T = 3 only predict it from the carried state.  Trained with the
    state carried, the model predicts it; reset the state at each window and it is a coin flip."""
    cfg = lstm_lm.LSTMConfig(vocab_size=3, n_embd=4, n_hidden=8, n_layer=1)
    r = np.random.default_rng(0)
    params = lstm_lm.init_params(cfg, r)
    opt = init_state(params)
    period = np.array([0, 2, 2, 2, 2, 1, 2, 2, 2, 2])  # a = 0, b = 1, x = 2
    B, T = 8, 5
    stream = np.tile(period, 40)  # (400,)
    rows = np.stack([stream[k : k + T * 60 + 1] for k in range(B)])  # (B, 301): B shifted copies
    state = None
    for step in range(300):
        t = (step % 60) * T
        if t == 0:
            state = None
        _, grads, state = lstm_lm.loss_grads_and_state(params, cfg, rows[:, t : t + T], rows[:, t + 1 : t + T + 1],
                                                      state=state)
        adam_step(params, grads, opt, lr=2e-2)

    def marker_accuracy(carry: bool, T_eval: int = 3):
        state, hits, count = None, 0, 0
        for t in range(0, 180, T_eval):
            logits, cache = lstm_lm.forward(params, cfg, rows[:, t : t + T_eval], state=state if carry else None)
            state = lstm_lm.final_state(cache)
            y = rows[:, t + 1 : t + T_eval + 1]
            at_marker = y != 2  # (B, T_eval)
            hits += (logits.argmax(-1) == y)[at_marker].sum()
            count += at_marker.sum()
        return hits / count

    assert marker_accuracy(carry=True) > 0.9 and marker_accuracy(carry=False) < 0.75  # seeds 0-4: >= 0.94, <= 0.5


def test_forget_bias_init():
    Wx, Wh, b = lstm.lstm_init(np.random.default_rng(0), 3, 4, forget_bias=1.5)
    assert Wx.shape == (3, 16) and Wh.shape == (4, 16) and b.dtype == np.float32
    np.testing.assert_array_equal(b, np.r_[np.zeros(4), np.full(4, 1.5), np.zeros(8)])
    assert np.abs(Wh).max() <= 0.5  # U(-1/sqrt(Hd), 1/sqrt(Hd))
    params = lstm_lm.init_params(lstm_lm.LSTMConfig(vocab_size=5, n_hidden=4, n_layer=2, forget_bias=2.0),
                                 np.random.default_rng(0))
    assert (params["lstm.1.b"][4:8] == 2.0).all() and (params["lstm.0.b"][:4] == 0).all()


def test_saturated_gates_stay_finite():
    a = np.array([[1e4, -1e4, 1e4, -1e4, -1e4, 1e4, -1e4, 1e4]])  # (1, 4Hd), Hd = 2
    with np.errstate(over="raise", invalid="raise"):
        h, c, cache = lstm.lstm_gates_forward(a, np.array([[3.0, -2.0]]))
        da, dc_prev = lstm.lstm_gates_backward(np.ones((1, 2)), np.ones((1, 2)), cache)
    np.testing.assert_allclose(c, [[2.0, 0.0]])  # unit 1: i = f = 1, g = -1, c = 3 - 1; unit 2: i = f = 0
    np.testing.assert_allclose(h, [[0.0, 0.0]])  # o = 0 | c = 0
    assert np.isfinite(h).all() and np.isfinite(da).all() and np.isfinite(dc_prev).all()


def test_float32_stays_float32():
    cfg = lstm_lm.LSTMConfig(vocab_size=7, n_embd=3, n_hidden=4, n_layer=2)
    params = lstm_lm.init_params(cfg, np.random.default_rng(0))
    idx = np.random.default_rng(1).integers(0, 7, (2, 5))
    loss, grads, state = lstm_lm.loss_grads_and_state(params, cfg, idx, idx)
    loss2, grads2, _ = lstm_lm.loss_grads_and_state(params, cfg, idx, idx, state=state)
    assert isinstance(loss, float) and abs(loss - np.log(7)) < 0.5
    for g in (grads, grads2):
        assert {k: v.dtype for k, v in g.items()} == {k: np.dtype(np.float32) for k in params}
    assert all(a.dtype == np.float32 for pair in state for a in pair)
    logits, _ = lstm_lm.forward(params, cfg, idx, state=state)
    assert logits.dtype == np.float32


# ---- bad input ----


def lm_call(idx=None, state="none", params=None):
    cfg = lstm_lm.LSTMConfig(vocab_size=5, n_embd=2, n_hidden=3, n_layer=2)
    p = lstm_lm.init_params(cfg, np.random.default_rng(0)) if params is None else params(cfg)
    idx = np.zeros((2, 4), int) if idx is None else idx
    return lstm_lm.forward(p, cfg, idx, state=None if state == "none" else state)


f32 = np.float32
Z = np.zeros((2, 3), f32)
W = (np.zeros((2, 12)), np.zeros((3, 12)), np.zeros(12))  # Wx (D=2), Wh, b for Hd = 3


@pytest.mark.parametrize("call,match", [
    (lambda: lm_call(idx=np.array([[0, 1, 5]])), r"idx: token id 5 is outside \[0, 5\)"),
    (lambda: lm_call(idx=np.array([[0, -2]])), r"idx: token id -2 is outside"),
    (lambda: lm_call(idx=np.zeros((2, 3))), "idx must be integer token ids, got dtype float64"),
    (lambda: lm_call(idx=np.zeros(4, int)), r"idx must have shape \(B, T\)"),
    (lambda: lm_call(idx=np.zeros((2, 0), int)), r"idx must have shape \(B, T\) with T >= 1"),
    (lambda: lm_call(state=[(Z, Z)]), "state must be a list of 2 \\(h, c\\) pairs.*length 1"),
    (lambda: lm_call(state=[(Z, Z), (Z, np.zeros((2, 4), f32))]),
     r"state\[1\] c must be a \(2, 3\) array of float32.*got \(2, 4\) float32"),
    (lambda: lm_call(state=[(Z, Z), (Z, np.zeros((2, 3)))]), r"state\[1\] c must be .* got \(2, 3\) float64"),
    (lambda: lm_call(state=[(Z, Z), Z]), r"state\[1\] must be a pair \(h, c\)"),
    (lambda: lm_call(params=lambda c: {**lstm_lm.init_params(c, np.random.default_rng(0), np.float64),
                                       "b_out": np.zeros(5, f32)}), "params must all be float32 or all float64"),
    (lambda: lm_call(params=lambda c: lstm_lm.init_params(lstm_lm.LSTMConfig(5, 2, 3, 1), np.random.default_rng(0))),
     "params must have keys"),
    (lambda: lstm_lm.LSTMConfig(vocab_size=5, n_layer=0), "n_layer must be a positive integer"),
    (lambda: lstm.lstm_forward(np.zeros((2, 2)), np.zeros((2, 3)), np.zeros((2, 3)), *W),
     r"lstm_forward: x must have shape \(B, T, D\), got \(2, 2\)"),
    (lambda: lstm.lstm_forward(np.zeros((2, 4, 2)), np.zeros((3, 3)), np.zeros((2, 3)), *W),
     r"lstm_forward: h0 must have shape \(2, 3\) \(B = 2, D = 2, Hd = 3\), got \(3, 3\)"),
    (lambda: lstm.lstm_forward(np.zeros((2, 4, 2)), np.zeros((2, 3)), np.zeros((2, 3)), W[0], W[1][:, :8], W[2]),
     r"Wh must have shape \(3, 12\)"),
    (lambda: lstm.lstm_forward(np.zeros((2, 4, 2), f32), np.zeros((2, 3)), np.zeros((2, 3)), *W),
     r"same dtype \(no silent upcast\), got x float32, h0 float64"),
    (lambda: lstm.lstm_forward(np.zeros((2, 0, 2)), np.zeros((2, 3)), np.zeros((2, 3)), *W), "at least one time step"),
    (lambda: lstm.lstm_step_forward(np.zeros((2, 2), int), np.zeros((2, 3)), np.zeros((2, 3)), *W),
     "x must be float32 or float64, got dtype int"),
    (lambda: lstm.lstm_step_forward(np.zeros((2, 2)), np.zeros((2, 3)), np.zeros((2, 4)), *W),
     r"lstm_step_forward: c_prev must have shape \(2, 3\)"),
    (lambda: lstm.lstm_stack_forward(np.zeros((2, 4, 2)), [], [W]), "one \\(h0, c0\\) per layer: 1 layers, got 0"),
])
def test_bad_input_raises_clear_valueerror(call, match):
    with pytest.raises(ValueError, match=match):
        call()
