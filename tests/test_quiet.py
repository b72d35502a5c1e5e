"""Library mode is quiet: ``nasprune.run(..., progress=False)`` prints none of
transformers' load reports or progress bars, and leaves their settings as they were."""

from __future__ import annotations

from test_pipeline import tiny_run_config

import nasprune


def test_run_without_progress_prints_nothing_of_transformers(tmp_path, tiny_model_dir,
                                                             toy_glue, capfd):
    from transformers.utils import logging as tf_logging

    before = (tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled())
    cfg = tiny_run_config(tiny_model_dir, toy_glue, trials=3)
    nasprune.run(cfg, tmp_path, progress=False, until="search")
    out, err = capfd.readouterr()
    for noise in ("Loading weights", "LOAD REPORT", "Writing model shards", "MISSING"):
        assert noise not in out + err, noise
    assert (tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled()) == before
    # positive control: the same load by transformers itself, its bars on, is heard here
    from transformers import AutoModelForSequenceClassification

    tf_logging.enable_progress_bar()
    try:
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "finetune" / "model")
    finally:
        if not before[1]:
            tf_logging.disable_progress_bar()
    out, err = capfd.readouterr()
    assert "Loading weights" in out + err
