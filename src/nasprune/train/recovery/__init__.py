"""Recovery of the picked sub-network before export: win back accuracy lost to pruning,
shapes unchanged. A method works on the *extracted* (physically smaller) model with the
full model as reference: ``least-squares`` refits output projections without training
(``least_squares``), ``distill`` (the default) trains on the fixed teacher's outputs
(``distillation``), ``both`` runs one then the other and ``none`` leaves the model as it is
(``combined``); ``recover.recover`` measures before and after each step. A method is a
function of a ``recover.RecoveryRun``; adding one is a new file plus one line here.
"""

from nasprune.registry import Registry

RECOVERY_METHODS = Registry("recovery method", {
    "distill": "nasprune.train.recovery.distillation:distill_method",
    "least-squares": "nasprune.train.recovery.least_squares:least_squares_method",
    "both": "nasprune.train.recovery.combined:both",
    "none": "nasprune.train.recovery.combined:none",
}, about={
    "distill": "train the pick on the fine-tuned model's outputs",
    "least-squares": "refit its output projections, no training",
    "both": "least-squares, then distill",
    "none": "export the pick as searched",
})
