"""The Python API end to end: fine-tune -> search -> pick -> export -> load -> predict.

    python examples/api.py                          # MiniLM-L6 on 2,000 SST-2 examples
    python examples/api.py --model DIR --train 128 --trials 8   # (the test runs this)

Every step is the library call that the matching ``nasprune`` command makes.
"""

import argparse
from pathlib import Path

import torch

import nasprune

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="minilm-l6")
parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared"
                                              / "data" / "glue"))
parser.add_argument("--run-dir", default="runs/api-example")
parser.add_argument("--train", type=int, default=2000)
parser.add_argument("--trials", type=int, default=40)
parser.add_argument("--force", action="store_true", help="a random test model learns nothing")
args = parser.parse_args()

# 1. describe the run: the same fields as the flags of `nasprune run`
cfg = nasprune.RunConfig(
    model=args.model,
    data=nasprune.DataConfig(task="sst2", data_dir=args.data_dir,
                             max_train_examples=args.train),
    train=nasprune.TrainConfig(epochs=1, progress=False),
    search=nasprune.SearchConfig(trials=args.trials, calibration_examples=64),
    pick="encoder_params<=0.5",   # 2. the budget the pick must meet (chosen on the search split)
    recover_epochs=1,
    force=args.force,
)

# 3. fine-tune, reorder, search, pick, recover and export in one resumable run directory
summary = nasprune.run(cfg, args.run_dir, progress=False)
print(f"pick {summary['pick']['text']}: {summary['pick']['encoder_params_fraction']:.0%} of "
      f"the encoder; validation accuracy {summary['exported']['validation']:.3f} "
      f"(unpruned {summary['unpruned']['validation']:.3f})")

# 4. load the export (checksums verified) and predict
model, tokenizer = nasprune.load(summary["export_dir"])
batch = tokenizer(["a gripping, funny film", "dull and far too long"], padding=True,
                  return_tensors="pt")
with torch.inference_mode():
    labels = model(**batch).logits.argmax(-1).tolist()
print([model.config.id2label[i] for i in labels])
