#!/usr/bin/env python3
"""An experiment, not a feature: would a min_df for hashed n-grams close the hashed student's gap?

The hashed student keeps every n-gram, rare ones too, where the vocabulary student keeps those in
min_df (2) reviews. Here n-grams are hashed at a fine resolution F = n_buckets * 64 (a multiple of
n_buckets, so a fine slot's bucket is its index mod n_buckets, the bucket HashingVectorizer gives),
slots whose document frequency is below 2 are dropped, and the rest go through the hashed student's
own streamed ridge (bert2lr.distill's shard store). A scorer would need the kept slots, a bitmap of
F bits, in the model file; that is not built. Prints the accuracy on the project's test half.

    .venv/bin/python scripts/hashed_min_df_experiment.py PROJECT N_SHARDS   # e.g. a 74,000-review run, 8
"""
import sys, tempfile, numpy as np
from pathlib import Path
from scipy import sparse
from sklearn.feature_extraction.text import HashingVectorizer
from bert2lr import distill
from bert2lr.files import read_transfer_shards, read_reviews
from bert2lr.params import StudentParams
proj, n_shards = Path(sys.argv[1]), int(sys.argv[2]); nb = 2**21; F = nb * 64
fine = HashingVectorizer(n_features=F, ngram_range=(1, 3), alternate_sign=False, norm=None, dtype=np.float64)
labeled = read_reviews(proj/'data/splits/labeled.jsonl', need_labels=True)
shards = []
for k, (rev, lg) in enumerate(read_transfer_shards(proj/'data/splits/unlabeled', proj/'data/teacher_logits/unlabeled', 2)):
    if k >= n_shards: break
    shards.append(([r['text'] for r in rev], lg))
df_fine = np.zeros(F, dtype=np.uint8)
fine_X = []
for texts, lg in shards + [([r['text'] for r in labeled], None)]:
    X = fine.transform(texts); fine_X.append(X)
    u, c = np.unique(X.indices, return_counts=True)
    df_fine[u] = np.minimum(df_fine[u].astype(np.int64) + c, 255).astype(np.uint8)
def coarse(X):
    X = X.tocoo(); keep = df_fine[X.col] >= 2
    return sparse.csr_matrix((X.data[keep], (X.row[keep], X.col[keep] % nb)), shape=(X.shape[0], nb))
p = StudentParams(features="hashing", n_buckets=nb)
margin_all = np.concatenate([lg[:,1]-lg[:,0] for _, lg in shards]); scale = np.abs(margin_all).mean()
gold = np.array([r['label'] for r in labeled])
with tempfile.TemporaryDirectory() as d:
    store = distill._ShardStore(Path(d)); df = np.zeros(nb, dtype=np.int64)
    for (texts, lg), X in zip(shards, fine_X):
        C = coarse(X); df += np.bincount(C.indices, minlength=nb); t, _ = distill._targets(lg); store.add(C, t, np.ones(len(texts)))
    C = coarse(fine_X[-1]); df += np.bincount(C.indices, minlength=nb)
    store.add(C, np.where(gold == 1, scale, -scale)[:, None], np.ones(len(gold)))
    n_docs = sum(len(t) for t, _ in shards) + len(gold)
    idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    sw, xs, ys = store.to_tfidf(idf, True); xm, ym = xs/sw, ys/sw
    coef = store.ridge(0, xm, ym[0], sw, 1.0); b = ym[0] - coef @ xm
test = read_reviews(proj/'data/splits/test_full.jsonl', need_labels=True)
Xt = coarse(fine.transform([r['text'] for r in test])); Xt.data = 1 + np.log(Xt.data)
from sklearn.preprocessing import normalize
Xt = normalize(Xt @ sparse.diags(idf))
acc = np.mean(((Xt @ coef + b) > 0) == np.array([r['label'] for r in test]))
print(f"{n_shards} shards: hashed + fine-hash min_df 2: accuracy on the test half {acc:.4f}")
