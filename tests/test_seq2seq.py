"""The encoder-decoder Transformer: masks, broken backwards caught, decoding, scores, learning."""

import itertools

import numpy as np
import pytest

from minilm import optim
from minilm import seq2seq as S
from minilm.cases import seq2seq as CS
from minilm.gradcheck import TOLERANCE, check_pair
from minilm.softmax import log_softmax_forward
from minilm.tasks import numbers as N
from minilm.translate import beam_search, edit_distance, greedy_decode, strip_eos, translation_scores

BOS, EOS = 1, 2


def tiny(dtype=np.float64, seed=0, **kw):
    cfg = S.Seq2SeqConfig(**{"vocab_size": 7, "src_vocab_size": 9, "block_size": 8, "n_layer": 2, "n_dec_layer": 2,
                             "n_head": 2, "n_embd": 8} | kw)
    return cfg, S.init_params(cfg, np.random.default_rng(seed), dtype)


# ---- broken backwards are caught by the very checkers the gradcheck cases use ----


def test_decoder_block_checker_catches_broken_backwards():
    b = CS.DecoderBlockCase(CS.decoder_config())
    inputs = b.inputs()
    assert max(b.check(inputs).values()) <= TOLERANCE

    def scaled_dmem(dout, cache):  # the encoder side's gradient off by 1%
        dy, dmem, g = S.decoder_block_backward(dout, cache)
        return dy, 1.01 * dmem, g

    def no_cross_residual(dout, cache):  # forgets that h1 also reaches h1 + CrossAttn(h1) directly
        c = cache
        ds3 = S.layernorm_backward(dout, c["ln3"])[0]
        dh2 = S.ffn_backward(ds3, c["ffn"])[0] + ds3
        ds2 = S.layernorm_backward(dh2, c["ln2"])[0]
        dh1, dmem, *_ = S.mha_backward(ds2, c["cross"])  # + ds2 dropped
        ds1 = S.layernorm_backward(dh1, c["ln1"])[0]
        dq, dkv, *_ = S.mha_backward(ds1, c["self"])
        return ds1 + dq + dkv, dmem, S.decoder_block_backward(dout, cache)[2]

    for broken, name in [(scaled_dmem, "dmem"), (no_cross_residual, "dy")]:
        errors = check_pair(b.forward, lambda d, c, broken=broken: b.backward(d, c, broken), inputs,
                            ["y", "mem"] + b.keys, wrt=[0, 1])
        assert errors[name] > 1e-4, (name, errors)


def test_model_checkers_catch_broken_backwards(monkeypatch):
    m = CS.text_model()
    drawn = m.inputs()
    right = m.check(drawn, keys=["src.wte", "enc0.attn.W_v", "head.W"])
    assert max(right.values()) <= TOLERANCE

    def broken(drawn, p):  # the encoder's gradient comes from the cross-attention: scale it by 1.01
        real = S.decoder_block_backward
        monkeypatch.setattr(S, "decoder_block_backward", lambda d, c: (lambda y, m_, g: (y, 1.01 * m_, g))(*real(d, c)))
        try:
            return m.grads(drawn, p)
        finally:
            monkeypatch.setattr(S, "decoder_block_backward", real)

    errors = m.check(drawn, grads_of=broken, keys=["src.wte", "enc0.attn.W_v", "head.W"])
    assert errors["dsrc.wte"] > 1e-4 and errors["denc0.attn.W_v"] > 1e-4 and errors["dhead.W"] <= TOLERANCE

    deep = CS.text_model(n_dec_layer=2)
    drawn = deep.inputs(every_entry=False)
    assert max(deep.check_directions(drawn).values()) <= TOLERANCE

    def last_block_only(drawn, p):  # the encoder output reads only one decoder block's dmem
        real, seen = S.decoder_block_backward, []

        def once(d, c):
            dy, dmem, g = real(d, c)
            seen.append(1)
            return dy, dmem if len(seen) == 1 else 0 * dmem, g

        monkeypatch.setattr(S, "decoder_block_backward", once)
        try:
            return deep.grads(drawn, p)
        finally:
            monkeypatch.setattr(S, "decoder_block_backward", real)

    assert min(deep.check_directions(drawn, grads_of=last_block_only).values()) > 1e-4


def test_shared_table_checker_catches_a_dropped_lookup(monkeypatch):
    m = CS.shared_pre_ln_model(n_dec_layer=2)
    drawn = m.inputs(every_entry=False)
    errors = m.check_directions(drawn, per_parameter=True)
    assert max(errors.values()) <= TOLERANCE and "dwte along d" in errors

    def target_side_only(drawn, p, monkeypatch=monkeypatch):  # the shared table forgets the source's lookup
        real, calls = S._embed_backward, []

        def embed_backward(dx, cache):  # backward calls it for the target first, then for the source
            calls.append(1)
            return real(dx, cache) * (len(calls) == 1)

        monkeypatch.setattr(S, "_embed_backward", embed_backward)
        try:
            return m.grads(drawn, p)
        finally:
            monkeypatch.setattr(S, "_embed_backward", real)

    broken = m.check_directions(drawn, grads_of=target_side_only, per_parameter=True)
    assert broken["dwte along d"] > 1e-4 and broken["denc0.attn.W_q along d"] <= TOLERANCE


# ---- masks ----


def test_padding_changes_nothing_for_the_real_tokens():
    cfg, p = tiny()
    src = np.array([[3, 4, 5, 6, 7], [5, 8, 3, 0, 0]])  # row 1 padded with id 0
    tgt_in = np.array([[BOS, 3, 4, 5], [BOS, 6, 0, 0]])
    logits, _ = S.forward(p, cfg, src, tgt_in)
    alone, _ = S.forward(p, cfg, src[1:, :3], tgt_in[1:, :2])
    np.testing.assert_allclose(logits[1, :2], alone[0], rtol=0, atol=1e-12)


def test_decoder_is_causal_and_reads_the_source():
    cfg, p = tiny()
    src = np.array([[3, 4, 5]])
    tgt_in = np.array([[BOS, 3, 4, 5]])
    a, _ = S.forward(p, cfg, src, tgt_in)
    b, _ = S.forward(p, cfg, src, np.array([[BOS, 3, 6, 6]]))
    np.testing.assert_allclose(a[0, :2], b[0, :2], rtol=0, atol=1e-12)  # positions 0, 1 never see 2, 3
    assert not np.allclose(a[0, 2], b[0, 2])
    c, _ = S.forward(p, cfg, np.array([[3, 4, 8]]), tgt_in)
    assert not np.allclose(a[0, 0], c[0, 0])  # the first target position already reads the whole source


def test_padding_gets_no_gradient_and_cross_attention_skips_it():
    cfg, p = tiny()
    src = np.array([[3, 4, 5, 6], [5, 8, 0, 0]])
    tgt = np.array([[BOS, 3, 4, EOS], [BOS, 5, EOS, 0]])
    _, grads = S.loss_and_grads(p, cfg, src, tgt)
    assert np.all(grads["src.wte"][0] == 0)  # the padding id is read only at padded positions
    assert np.any(grads["src.wte"][3] != 0)
    _, cache = S.forward(p, cfg, src, tgt[:, :-1])
    w = S.cross_attention_maps(cache)  # (L, B, H, T, S)
    assert w.shape == (2, 2, 2, 3, 4)
    np.testing.assert_allclose(w.sum(-1), 1.0)
    assert np.all(w[:, 1, :, :, 2:] == 0)


def test_dtypes_are_kept():
    cfg, p = tiny(np.float32)
    loss, grads = S.loss_and_grads(p, cfg, np.array([[3, 4]]), np.array([[BOS, 3, EOS]]))
    assert isinstance(loss, float) and all(g.dtype == np.float32 for g in grads.values())
    assert set(grads) == set(p)


def test_bad_input_is_named():
    cfg, p = tiny()
    with pytest.raises(ValueError, match="src: token id 9 is outside"):
        S.forward(p, cfg, np.array([[3, 9]]), np.array([[BOS]]))
    with pytest.raises(ValueError, match="more than block_size"):
        S.forward(p, cfg, np.ones((1, 9), np.int64), np.array([[BOS]]))
    with pytest.raises(ValueError, match=r"tgt must be a \(B, T \+ 1\)"):
        S.loss_and_grads(p, cfg, np.array([[3]]), np.array([[BOS]]))
    with pytest.raises(ValueError, match="share_embeddings needs one vocabulary"):
        S.Seq2SeqConfig(vocab_size=5, src_vocab_size=6, share_embeddings=True)
    with pytest.raises(ValueError, match="params lack 'head.W'"):
        S.forward({k: v for k, v in p.items() if k != "head.W"}, cfg, np.array([[3]]), np.array([[BOS]]))


# ---- decoding ----

# A hand-made "model" over V = 5 (0 pad, 1 <bos>, 2 <eos>, 3 = A, 4 = B) that reads only the last token:
NEXT = {1: [0, 0, 0.1, 0.5, 0.4], 3: [0, 0, 0.33, 0.34, 0.33], 4: [0, 0, 0.9, 0.05, 0.05], 2: [0, 0, 1, 0, 0]}


def hand_model(prefix, rows):
    return np.log(np.array([NEXT[int(p[-1])] for p in prefix]) + 1e-12)  # (N, V)


def test_greedy_is_led_astray_and_beam_search_is_not():
    """Greedy takes A (0.5) and then keeps writing A (0.34 each); the best translation is
    B <eos> with p = 0.4 * 0.9 = 0.36, against A <eos> = 0.5 * 0.33 = 0.165."""
    assert greedy_decode(hand_model, 1, BOS, EOS, max_len=4).tolist() == [[3, 3, 3, 3]]
    out = beam_search(hand_model, 2, BOS, EOS, max_len=4, beam_size=2)
    assert [strip_eos(r, EOS) for r in out] == [[4], [4]]
    assert beam_search(hand_model, 1, BOS, EOS, max_len=4, beam_size=1).tolist() == [[3, 3, 3, 3]]


def test_length_penalty_prefers_the_longer_translation():
    """<eos> at once has p = 0.5 (length 1); A <eos> has 0.5 * 0.9 = 0.45 (length 2).  Plain log p picks the
    empty translation; with lp(n) = ((5 + n) / 6)^2, log 0.45 / (7/6)^2 = -0.587 beats log 0.5 / 1 = -0.693."""
    table = {BOS: [0, 0, 0.5, 0.5, 0], 3: [0, 0, 0.9, 0.1, 0], EOS: [0, 0, 1, 0, 0]}

    def model(prefix, rows):
        return np.log(np.array([table[int(p[-1])] for p in prefix]) + 1e-12)

    assert strip_eos(beam_search(model, 1, BOS, EOS, max_len=3, beam_size=2)[0], EOS) == []
    assert strip_eos(beam_search(model, 1, BOS, EOS, max_len=3, beam_size=2, alpha=2.0)[0], EOS) == [3]


def random_model(prefix, rows):
    """Logits over V = 5 drawn afresh for every (sentence, prefix): no structure a search could exploit."""
    return np.stack([2 * np.random.default_rng([int(r), *map(int, p)]).standard_normal(5)
                     for p, r in zip(prefix, rows, strict=True)])  # (N, V)


def test_a_wide_beam_is_exact_search():
    """With K = 25 >= 5^2 no prefix is dropped before the last of 3 steps, so beam search must
    return the most probable of all 5 + 25 + 125 target sequences that end in <eos> by then."""
    found = beam_search(random_model, 4, BOS, EOS, max_len=3, beam_size=25)
    lengths = []
    for i in range(4):
        best, best_lp = None, -np.inf
        for n in range(1, 4):
            for c in itertools.product(range(5), repeat=n):
                if c[-1] != EOS or EOS in c[:-1]:
                    continue
                prefix = (BOS,) + c
                lp = sum(log_softmax_forward(random_model([prefix[:t]], [i]))[0][0, prefix[t]]
                         for t in range(1, len(prefix)))
                best, best_lp = (list(c[:-1]), lp) if lp > best_lp else (best, best_lp)
        assert strip_eos(found[i], EOS) == best
        lengths.append(len(best))
    assert len(set(lengths)) > 1  # the four best translations are not all of one length


def test_a_beam_of_one_is_greedy_and_rows_keep_their_sentences():
    cfg, p = tiny(seed=3)
    src = np.array([[3, 4, 5, 6], [5, 8, 3, 0], [7, 7, 0, 0]])
    fn = S.next_logits_fn(p, cfg, src)
    greedy = greedy_decode(fn, 3, BOS, EOS, max_len=6)
    np.testing.assert_array_equal(beam_search(fn, 3, BOS, EOS, max_len=6, beam_size=1), greedy)
    for i in range(3):  # each sentence alone decodes as it did in the batch
        alone = greedy_decode(S.next_logits_fn(p, cfg, src[i : i + 1]), 1, BOS, EOS, 6)[0]
        assert strip_eos(alone, EOS) == strip_eos(greedy[i], EOS)


def test_edit_distance_against_hand_counts():
    assert edit_distance("kitten", "sitting") == 3  # k->s, e->i, +g
    assert edit_distance("", "三千") == 2 and edit_distance("三千", "") == 2
    assert edit_distance("三千零四十二", "三千四十二") == 1  # the missing 零
    assert edit_distance("十五", "一十五") == 1
    assert edit_distance("四万五千", "五万四千") == 2
    s = translation_scores(["三千零四十二", "十五"], ["三千零四十二", "一十五"])
    assert s == {"exact_match": 0.5, "edit_distance": 0.5, "char_error_rate": 1 / 9, "sentences": 2}
    with pytest.raises(ValueError, match="as many hypotheses"):
        translation_scores(["a"], [])


# ---- learning ----


def test_learns_a_handful_of_translations_by_heart():
    """Teacher forcing on 24 numbers: the loss falls and greedy decoding writes them back exactly."""
    sv, tv = N.vocabularies("en-zh")
    numbers = [3042, 10, 15, 110, 10010, 45600, 7, 99999, 2002, 101, 1001, 12345,
               40050, 300, 16, 70, 808, 5432, 11000, 60006, 90, 19, 4321, 100]
    src, tgt = N.encode_numbers(numbers, sv, tv)
    cfg = S.Seq2SeqConfig(vocab_size=len(tv), src_vocab_size=len(sv), block_size=16, n_layer=1, n_dec_layer=1,
                          n_head=2, n_embd=32)
    p = S.init_params(cfg, np.random.default_rng(0))
    state = optim.init_state(p)
    first = S.loss(p, cfg, src, tgt)
    for _ in range(100):
        loss, grads = S.loss_and_grads(p, cfg, src, tgt)
        optim.adamw_step(p, grads, state, lr=1e-2, weight_decay=0.0)
    assert loss < 0.05 * first
    out = greedy_decode(S.next_logits_fn(p, cfg, src), len(numbers), N.BOS, N.EOS, 12)
    assert [N.decode_target(r, tv, "zh") for r in out] == [N.int_to_chinese(n) for n in numbers]


# ---- the training run and the translate command ----


QUIET = dict(progress=False, log=lambda *a, **k: None)


def tiny_run(tmp_path, **kw):
    from minilm.training.loop import TrainOptions

    return TrainOptions(**{"model": "seq2seq", "max_number": 299, "steps": 6, "batch_size": 8, "layers": 1,
                           "heads": 2, "width": 16, "eval_every": 3, "eval_size": 20,
                           "out": str(tmp_path / "run")} | kw)


def test_training_run_writes_checkpoint_metrics_and_resumes_exactly(tmp_path):
    from minilm.training.adapters import load_run
    from minilm.training.loop import TrainOptions, train

    whole = train(tiny_run(tmp_path / "a"), **QUIET)
    assert whole["finished"] and whole["steps"] == 6 and whole["val_sentences"] == 30  # every held-out number
    for name in ("checkpoint.npz", "metrics.json", "loss.png"):
        assert (tmp_path / "a" / "run" / name).exists()
    paused = train(tiny_run(tmp_path / "b", stop_after=4), **QUIET)
    assert not paused["finished"] and paused["steps"] == 4 and paused["val_sentences"] == 20  # the eval sample
    with pytest.raises(ValueError, match="exists; continue it with --resume, start afresh with --force"):
        train(tiny_run(tmp_path / "b"), **QUIET)
    with pytest.raises(ValueError, match="--width 32 differs"):
        train(tiny_run(tmp_path / "b", width=32), resume=True, explicit={"width"}, **QUIET)
    resumed = train(TrainOptions(out=str(tmp_path / "b" / "run")), resume=True, **QUIET)  # nothing but --out
    a, b = (load_run(tmp_path / d / "run" / "checkpoint.npz") for d in "ab")
    assert resumed["finished"] and a.meta["history"]["train_loss"] == b.meta["history"]["train_loss"]
    assert a.meta["history"]["exact_match"] == b.meta["history"]["exact_match"]
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert whole["val_loss"] == resumed["val_loss"]


def test_translate_and_bad_options(tmp_path, capsys):
    from minilm.training.adapters import load_run
    from minilm.training.loop import train
    from minilm.training.translation import translate_texts

    train(tiny_run(tmp_path, direction="zh-en", share_vocab=True), **QUIET)
    run = load_run(tmp_path / "run" / "checkpoint.npz")
    out = translate_texts(run, ["三千零四十二", "十"], beam=2)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    with pytest.raises(ValueError, match="unknown token 'x'"):
        translate_texts(run, ["x"])
    with pytest.raises(ValueError, match="--beam must be >= 1"):
        translate_texts(run, ["十"], beam=0)
    with pytest.raises(ValueError, match="--block-size does not apply to --model seq2seq"):
        train(tiny_run(tmp_path / "c", block_size=8), **QUIET)
    with pytest.raises(ValueError, match="--tokenizer does not apply to --model seq2seq"):
        train(tiny_run(tmp_path / "c", tokenizer="word"), explicit={"model", "tokenizer"}, **QUIET)
    with pytest.raises(ValueError, match="--width must be a positive integer"):
        train(tiny_run(tmp_path / "c", width=0), **QUIET)
    with pytest.raises(ValueError, match="--max-number must be in 1 .. "):
        train(tiny_run(tmp_path / "c", max_number=10**12), **QUIET)
    (tmp_path / "bad.npz").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt checkpoint"):
        load_run(tmp_path / "bad.npz")


def test_command_line_train_resume_translate_and_eval(tmp_path, capsys):
    from minilm import cli

    out = str(tmp_path / "cli")
    argv = ["train", "--model", "seq2seq", "--task", "numbers", "--max-number", "299", "--steps", "6",
            "--batch-size", "8", "--layers", "1", "--heads", "2", "--width", "16", "--eval-size", "10",
            "--stop-after", "3", "--out", out, "--quiet"]
    assert cli.main(argv) == 0
    assert "paused at step 3" in capsys.readouterr().out
    assert cli.main(["train", "--resume", "--out", out, "--quiet"]) == 0  # the checkpoint knows the rest
    printed = capsys.readouterr().out
    assert "seq2seq: step 6 of 6" in printed and "exact match" in printed
    assert cli.main(["translate", "--checkpoint", f"{out}/checkpoint.npz", "three thousand and forty-two"]) == 0
    assert capsys.readouterr().out.startswith("three thousand and forty-two\t")
    assert cli.main(["eval", "--checkpoint", f"{out}/checkpoint.npz"]) == 0
    assert "exact match" in capsys.readouterr().out
    assert cli.main(["train", "--model", "transformer", "--task", "numbers", "--out", str(tmp_path / "t")]) == 2
    assert "--task does not apply to --model transformer" in capsys.readouterr().err
    assert cli.main(["translate", "--checkpoint", f"{out}/missing.npz", "ten"]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
