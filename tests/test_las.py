"""Listen, Attend and Spell: every registered check passes, deliberately broken backwards are caught,
padding does not change a row's result, decoding, training lowers the loss, bad inputs."""

import numpy as np
import pytest

from minilm import las, optim, translate
from minilm.cases import all_cases
from minilm.cases import las as C
from minilm.gradcheck import TOLERANCE

BROKEN = 1e-4  # a broken backward must be off by far more than this (exact ones are <= 1e-7)
CASES = [c for c in all_cases() if c.group == "las" or c.name.startswith("LAS")]


def test_the_cases_are_registered():
    assert len(CASES) == 7


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.name)
def test_registered_case_passes(c):
    errors = c.run()
    assert errors and max(errors.values()) <= TOLERANCE, errors


# ---- deliberately broken backwards: each must be caught by the same checks ----

def blstm_backward_without_unreversing(dout, cache):
    """The backward direction's gradient left in reversed time."""
    c_f, c_b, lengths, keep, Hd = cache
    dout = dout * keep
    dx_f, _, _, *dfwd = las.lstm_backward(dout[..., :Hd], c_f)
    dx_r, _, _, *dbwd = las.lstm_backward(las.reverse_time(dout[..., Hd:], lengths), c_b)
    return dx_f + dx_r, tuple(dfwd), tuple(dbwd)


def blstm_backward_reversing_whole_rows(dout, cache):
    """Reverses the padded rows whole (t -> T-1-t) instead of their first T_b frames."""
    c_f, c_b, lengths, keep, Hd = cache
    dout = dout * keep
    dx_f, _, _, *dfwd = las.lstm_backward(dout[..., :Hd], c_f)
    dx_r, _, _, *dbwd = las.lstm_backward(dout[:, ::-1, Hd:], c_b)
    return dx_f + dx_r[:, ::-1], tuple(dfwd), tuple(dbwd)


@pytest.mark.parametrize("broken", [blstm_backward_without_unreversing, blstm_backward_reversing_whole_rows])
def test_broken_blstm_backward_is_caught(broken):
    errors = C.check_pair(C.flat_blstm, lambda d, c: C.flat_blstm_backward(d, c, broken), C.blstm_inputs(),
                          C.BLSTM_NAMES)
    assert errors["dx"] > BROKEN


def test_pyramid_backward_that_swaps_the_joined_frames_is_caught():
    def swapped(dout, cache):
        T, Cw = cache
        B, U, _ = dout.shape
        return dout.reshape(B, U, 2, Cw)[:, :, ::-1].reshape(B, 2 * U, Cw)[:, :T]

    x = [np.random.default_rng(0).standard_normal((2, 5, 3))]
    assert C.check_pair(C.flat_pyramid, las.pyramid_backward, x, ["h"])["dh"] <= TOLERANCE
    assert C.check_pair(C.flat_pyramid, swapped, x, ["h"])["dh"] > BROKEN


def _without_fed_back_context(dstep_backward):
    def broken(ds, dcell, dctx, cache):
        dax, dctx_prev, *rest = dstep_backward(ds, dcell, dctx, cache)
        return (dax, 0 * dctx_prev, *rest)

    return broken


def test_speller_step_without_the_fed_back_context_is_caught():
    broken = _without_fed_back_context(las.speller_step_backward)
    errors = C.check_pair(C.flat_step, lambda d, c: C.flat_step_backward(d, c, broken), C.step_inputs(),
                          C.STEP_NAMES)
    assert errors["dctx_prev"] > BROKEN


def test_model_without_the_fed_back_context_is_caught(monkeypatch):
    monkeypatch.setattr(las, "speller_step_backward", _without_fed_back_context(las.speller_step_backward))
    errors = C.Model().check()
    assert max(errors.values()) > BROKEN
    assert errors["dlisten0.fwd.Wx/d"] > BROKEN  # the listener's gradient misses the feedback path too


def test_model_with_attention_values_gradient_scaled_is_caught(monkeypatch):
    exact = las.attention_backward
    monkeypatch.setattr(las, "attention_backward", lambda d, c: (lambda q, k, v: (q, k, 1.01 * v))(*exact(d, c)))
    errors = C.Model().check()
    assert errors["dlisten0.bwd.Wh/d"] > BROKEN and errors["dout.W/d"] <= TOLERANCE


def test_model_with_attention_keys_gradient_scaled_is_caught(monkeypatch):
    exact = las.attention_backward
    monkeypatch.setattr(las, "attention_backward", lambda d, c: (lambda q, k, v: (q, 1.01 * k, v))(*exact(d, c)))
    errors = C.Model().check()
    assert errors["datt.W_k/d"] > BROKEN and errors["dspell.Wh/d"] <= TOLERANCE


def test_listener_with_a_scaled_lstm_weight_gradient_is_caught(monkeypatch):
    exact = las.lstm_backward

    def broken(dhs, cache, dstate=None):
        dx, dh0, dc0, dWx, dWh, db = exact(dhs, cache, dstate)
        return dx, dh0, dc0, dWx, 1.01 * dWh, db

    monkeypatch.setattr(las, "lstm_backward", broken)
    errors = C.Listener().check()
    assert errors["dlisten0.fwd.Wh/d"] > BROKEN and errors["dlisten1.bwd.Wh/d"] > BROKEN


# ---- padding, dtype, decoding ----

CFG = las.LASConfig(vocab_size=6, n_mels=4, listener_hidden=3, n_pyramid=2, speller_hidden=5, n_embd=3, attention=4)


def test_a_row_gives_the_same_result_alone_as_in_a_padded_batch(rng):
    params = las.init_params(CFG, rng, np.float64)
    x = rng.standard_normal((3, 11, 4))
    lengths = np.array([11, 6, 3])
    y_in = rng.integers(0, 6, (3, 4))
    logits, cache = las.forward(params, CFG, x, lengths, y_in)
    for b in range(3):
        alone, _ = las.forward(params, CFG, x[b : b + 1, : lengths[b]], lengths[b : b + 1], y_in[b : b + 1])
        np.testing.assert_allclose(logits[b], alone[0], atol=1e-12)
    a = las.alignments(cache["spell"])
    assert a.shape == (3, 4, 3)  # U = ceil(11 / 4) = 3
    np.testing.assert_allclose(a.sum(-1), 1)
    assert (a[2, :, 1:] == 0).all()  # ceil(3 / 4) = 1 listener state: nothing past it is read


def test_float32_stays_float32(rng):
    params = las.init_params(CFG, rng)
    x = rng.standard_normal((2, 7, 4)).astype(np.float32)
    loss, grads = las.loss_and_grads(params, CFG, x, np.array([7, 5]), np.zeros((2, 3), np.int64),
                                     np.ones((2, 3), np.int64))
    assert all(g.dtype == np.float32 for g in grads.values()) and set(grads) == set(params)


def test_greedy_and_beam_decoding_through_the_translator(rng):
    params = las.init_params(CFG, rng, np.float64)
    x, lengths = rng.standard_normal((2, 9, 4)), np.array([9, 4])
    nl = las.next_logits_fn(params, CFG, x, lengths)
    greedy = translate.greedy_decode(nl, 2, 0, 0, 6)
    beam1 = translate.beam_search(nl, 2, 0, 0, 6, beam_size=1)
    np.testing.assert_array_equal(greedy, beam1)  # a beam of one is greedy
    # the greedy first token is the argmax of the speller's first step
    first = las.forward(params, CFG, x, lengths, np.zeros((2, 1), np.int64))[0][:, 0].argmax(-1)
    np.testing.assert_array_equal(greedy[:, 0], first)
    assert translate.beam_search(nl, 2, 0, 0, 6, beam_size=3).shape[0] == 2


def test_a_few_adam_steps_lower_the_loss(rng):
    """Two tone 'words': the speller must read the listener to tell them apart."""
    cfg = las.LASConfig(vocab_size=4, n_mels=4, listener_hidden=8, n_pyramid=1, speller_hidden=16, n_embd=4,
                        attention=8)
    params = las.init_params(cfg, rng)
    B, T = 8, 8
    which = np.arange(B) % 2
    x = (0.3 * rng.standard_normal((B, T, 4)) + 2 * np.eye(4)[which * 3][:, None, :]).astype(np.float32)
    y_out = np.stack([[1 + w, 0] for w in which])  # "word" 1 or 2, then <eos>
    y_in = np.stack([[0, 1 + w] for w in which])
    lengths = np.full(B, T)
    state = optim.init_state(params)
    first = las.loss(params, cfg, x, lengths, y_in, y_out)
    for _ in range(40):
        loss, g = las.loss_and_grads(params, cfg, x, lengths, y_in, y_out)
        optim.adam_step(params, g, state, 1e-2)
    assert las.loss(params, cfg, x, lengths, y_in, y_out) < 0.2 * first


@pytest.mark.parametrize("kw,match", [
    (dict(x=np.zeros((2, 5, 3))), r"features must have shape \(B, T, 4\)"),
    (dict(lengths=np.array([5, 0])), "lengths must be 2 integers in"),
    (dict(lengths=np.array([6, 2])), "lengths must be 2 integers in"),
    (dict(x=np.zeros((2, 5, 4), np.float32)), "no silent upcast"),
    (dict(y_in=np.array([[0, 9]] * 2)), "y_in"),
])
def test_bad_input_raises_clear_valueerror(rng, kw, match):
    params = las.init_params(CFG, rng, np.float64)
    args = dict(x=np.zeros((2, 5, 4)), lengths=np.array([5, 2]), y_in=np.zeros((2, 2), np.int64)) | kw
    with pytest.raises(ValueError, match=match):
        las.forward(params, CFG, args["x"], args["lengths"], args["y_in"])


def test_bad_configs():
    with pytest.raises(ValueError, match="listener_hidden"):
        las.LASConfig(listener_hidden=0)
    with pytest.raises(ValueError, match="n_pyramid"):
        las.LASConfig(n_pyramid=-1)
