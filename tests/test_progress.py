"""Outside a terminal, long work prints a progress line instead of staying silent."""

import io

from nasprune.progress import ProgressBar


def test_progress_lines_outside_a_terminal():
    stream = io.StringIO()  # not a terminal
    with ProgressBar(True, 10, 0, "fine-tuning", every=0.0, stream=stream) as bar:
        for done in range(1, 4):
            bar.update(done, f"loss {1 / done:.2f}")
        bar.print("epoch 1: search accuracy 0.8")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("fine-tuning: 1/10 after") and "loss 1.00" in lines[0]
    assert "epoch 1: search accuracy 0.8" in lines
    assert lines[-1].startswith("fine-tuning: 3/10")  # the final state, on close


def test_lines_are_spaced_and_disabled_means_silent():
    stream = io.StringIO()
    bar = ProgressBar(True, 100, 0, "search", every=3600, stream=stream)
    for done in range(100):
        bar.update(done)
    assert stream.getvalue() == ""  # not yet 30 s (here an hour)
    quiet = io.StringIO()
    with ProgressBar(False, 5, 0, "search", every=0.0, stream=quiet) as off:
        off.update(3)
        off.print("x")
    assert quiet.getvalue() == ""


def test_importance_scoring_shows_its_progress(capsys):
    """Importance ordering walks its calibration batches inside code we do not own; the
    pipeline's reordering says how far it is (it was silent for minutes on a base model)."""
    from cases import tiny_tokenizer
    from cases.exports import make_supernet
    from test_training import toy_data

    from nasprune.data.encode import encode
    from nasprune.pipeline.stages import reorder_on_calibration

    train = encode(tiny_tokenizer(), toy_data(), "train")
    reorder_on_calibration(make_supernet(), train, 96, progress=True)
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("importance")]
    assert lines and lines[-1].startswith("importance (fisher): 3/3")
