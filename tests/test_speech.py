"""The las model through the one training loop and the command line: a tiny run lowers the loss, resume,
eval, transcribe on WAV files, and bad inputs.  Skipped without the shared FSDD copy."""

from pathlib import Path

import numpy as np
import pytest

from minilm import audio, cli
from minilm.tasks import digits
from minilm.training import speech
from minilm.training.adapters import load_run
from minilm.training.loop import TrainOptions, train

SHARED = next((p / "shared" / "data" / "fsdd" for p in Path(__file__).resolve().parents
               if (p / "shared" / "data" / "fsdd" / "recordings").is_dir()), None)
pytestmark = pytest.mark.skipif(SHARED is None, reason="the shared FSDD copy (../shared) is absent")

TINY = ["--model", "las", "--task", "digits", "--max-digits", "2", "--train-size", "48", "--eval-size", "8",
        "--batch-size", "8", "--layers", "1", "--hidden", "8", "--width", "16", "--lr", "0.01", "--quiet"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("las")
    opts = TrainOptions(model="las", task="digits", data_dir=str(SHARED), max_digits=2, train_size=48,
                        eval_size=8, batch_size=8, layers=1, hidden=8, width=16, lr=0.01, steps=40, eval_every=20,
                        out=str(out))
    m = train(opts, progress=False, plot=False, log=lambda *a, **k: None)
    return out, m


def test_a_tiny_run_lowers_the_loss(trained):
    out, m = trained
    losses = load_run(out / "checkpoint.npz").meta["history"]["train_loss"]
    assert len(losses) == 40 and m["finished"]
    assert np.mean(losses[-5:]) < losses[0] - 0.8  # from ln 28 = 3.3 nats per character
    for k in ("val_word_error_rate", "val_exact_match", "val_digit_accuracy"):
        assert 0 <= m[k] <= 1


def test_resume_continues_to_the_same_parameters(trained, tmp_path):
    _, _ = trained
    args = TINY + ["--data-dir", str(SHARED), "--steps", "6", "--eval-every", "3"]
    assert cli.main(["train", *args, "--out", str(tmp_path / "a")]) == 0
    assert cli.main(["train", *args, "--out", str(tmp_path / "b"), "--stop-after", "3"]) == 0
    assert cli.main(["train", "--resume", "--out", str(tmp_path / "b"), "--quiet"]) == 0
    a, b = load_run(tmp_path / "a" / "checkpoint.npz"), load_run(tmp_path / "b" / "checkpoint.npz")
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


def test_eval_and_transcribe_on_wav_files(trained, tmp_path, capsys):
    out, m = trained
    ckpt = str(out / "checkpoint.npz")
    assert cli.main(["eval", "--checkpoint", ckpt]) == 0
    line = capsys.readouterr().out
    assert "word error rate" in line and "single-digit accuracy" in line and "over 8 examples" in line
    rec = SHARED / "recordings" / "3_theo_0.wav"
    copy = tmp_path / "three.wav"
    audio.write_wav(copy, audio.read_wav(rec))
    assert cli.main(["transcribe", "--checkpoint", ckpt, str(rec), str(copy)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split("\t")[0] for ln in lines] == [str(rec), str(copy)]
    assert lines[0].split("\t")[1] == lines[1].split("\t")[1]  # the same samples, the same transcript
    assert set(lines[0].split("\t")[1]) <= set(digits.ALPHABET)
    run = load_run(ckpt)
    greedy = speech.transcribe_files(run, [rec])
    assert speech.transcribe_files(run, [rec], beam=1) == greedy
    assert len(speech.transcribe_files(run, [rec], beam=3)) == 1


def test_bad_inputs_are_one_line_errors_with_status_2(trained, tmp_path, capsys):
    out, _ = trained
    ckpt = str(out / "checkpoint.npz")
    (tmp_path / "notes.wav").write_text("not audio\n")
    audio.write_wav(tmp_path / "ok.wav", np.zeros(800))
    wide = tmp_path / "wide.wav"
    import wave

    with wave.open(str(wide), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(16000)
        w.writeframes(b"\0" * 3200)
    cases = [(["transcribe", "--checkpoint", ckpt, str(tmp_path / "notes.wav")], "not a PCM WAV file"),
             (["transcribe", "--checkpoint", ckpt, str(tmp_path / "ok.wav"), str(wide)], "only 8000 Hz mono"),
             (["transcribe", "--checkpoint", ckpt, str(tmp_path / "missing.wav")], "no such file"),
             (["transcribe", "--checkpoint", ckpt, "--beam", "0", str(tmp_path / "ok.wav")], "--beam must be"),
             (["sample", "--checkpoint", ckpt], "minilm transcribe --checkpoint"),
             (["train", *TINY, "--data-dir", str(tmp_path), "--out", str(tmp_path / "r")], "does not hold the FSDD"),
             (["train", *TINY, "--data-dir", str(SHARED), "--max-digits", "0", "--out", str(tmp_path / "r")],
              "--max-digits must be a positive integer"),
             (["train", *TINY, "--corpus", "pydoc", "--out", str(tmp_path / "r")], "--corpus does not apply"),
             (["train", "--model", "lstm", "--data-dir", str(SHARED), "--out", str(tmp_path / "r")],
              "--data-dir does not apply")]
    for argv, match in cases:
        assert cli.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert match in err and err.count("\n") == 1, (argv, err)
    assert not (tmp_path / "r").exists()  # a refused run writes nothing
