"""Shrink a clone's params.yaml to tiny sizes, keeping every key and the real data and teacher.

Only sizes change (and a held-out slice for the teacher's chart): the archive still comes from fetch.sources (../shared beside the clone) and the
teacher is still the embedded all-MiniLM-L6-v2, so the run exercises what a user's run does.
"""

import sys

import yaml

TINY = {
    "split": {"n_labeled": 40, "n_unlabeled": 60, "n_test": 40},
    # n_heldout: the newcomer's run also charts held-out accuracy (0 on the defaults)
    "teacher": {"max_length": 64, "head_tokens": 24, "epochs": 1, "batch_size": 8, "n_heldout": 8},
    "logits": {"batch_size": 16, "shard_size": 30, "shards": [0, 1]},  # two shards of the 60
    "curve": {"sizes": [20, 40]},
    # the short-text measurement on 100 sentences, and the lever on: 60 sentences join the transfer set
    "short_texts": {"n_test_sentences": 100, "n_transfer_sentences": 60},
}

for path in sys.argv[1:]:  # params.yaml, and the other data sets' params files (params/*.yaml)
    with open(path, encoding="utf-8") as f:
        params = yaml.safe_load(f)
    for group, values in TINY.items():
        params[group].update(values)
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(params, f, sort_keys=False, allow_unicode=True)
