"""Training of the models the search prunes: fine-tuning with a plain loop (``loop``,
``finetune``) whose optimisation step is a strategy (``strategies``, super-network training
included), the distillation losses (``losses``), evaluation and task metrics
(``evaluation``, ``metrics``), and recovery of the extracted pick before export
(``recovery``)."""
