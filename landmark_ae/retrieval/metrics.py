"""Quality metrics: clustering agreement with landmark labels and retrieval scores.

scikit-learn is imported inside the functions that need it, so importing this
module stays cheap.
"""

from __future__ import annotations

import numpy as np

from landmark_ae.config import enum_value
from landmark_ae.retrieval.search import search

__all__ = [
    "CLUSTERING_METRICS",
    "clustering_scores",
    "kmeans_labels",
    "clustering_over_seeds",
    "average_precision_at_k",
    "retrieval_scores",
    "evaluate_embeddings",
]


def _check_labelings(labels_true, labels_pred) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(labels_true)
    p = np.asarray(labels_pred)
    if t.ndim != 1 or p.ndim != 1:
        raise ValueError("labelings must be 1-D")
    if t.shape != p.shape:
        raise ValueError(f"labelings differ in length: {t.size} vs {p.size}")
    return t, p


CLUSTERING_METRICS = ("nmi", "ri", "ari", "ami")  # clustering_scores' keys, in the order they are shown


def clustering_scores(labels_true, labels_pred) -> dict:
    """NMI (arithmetic), Rand index, ARI and AMI (scikit-learn's) as floats; keys nmi, ri, ari, ami."""
    from sklearn import metrics as skm

    t, p = _check_labelings(labels_true, labels_pred)
    return {
        "nmi": float(skm.normalized_mutual_info_score(t, p)),
        "ri": float(skm.rand_score(t, p)),  # the seed's RI: (TP + TN) / all pairs
        "ari": float(skm.adjusted_rand_score(t, p)),
        "ami": float(skm.adjusted_mutual_info_score(t, p)),
    }


FAISS_KMEANS_NITER = 40  # Lloyd iterations per FAISS k-means run


def kmeans_labels(x, n_clusters: int, seed: int, n_init: int = 10, backend: str = "sklearn") -> np.ndarray:
    """Cluster ids (int64) from k-means with a fixed seed and n_init restarts (the best kept):
    scikit-learn's KMeans (backend="sklearn"), or FAISS's (backend="faiss": nredo = n_init,
    FAISS_KMEANS_NITER iterations, k-means++ seeding, much faster at GLDv2 scale)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"x must be 2-D, got shape {x.shape}")
    if not 1 <= n_clusters <= x.shape[0]:
        raise ValueError(f"n_clusters={n_clusters} not in [1, {x.shape[0]}]")
    backend = enum_value(backend)
    if backend == "faiss":
        import faiss

        xs = np.ascontiguousarray(x, dtype=np.float32)
        # min_points_per_centroid=1: no FAISS warning on small sets; max: no silent subsampling;
        # k-means++ seeding (as sklearn's) where this FAISS has it: random seeding often merges clusters.
        init = {"init_method": faiss.ClusteringInitMethod_KMEANS_PLUS_PLUS} if hasattr(
            faiss, "ClusteringInitMethod_KMEANS_PLUS_PLUS") else {}
        km = faiss.Kmeans(xs.shape[1], n_clusters, niter=FAISS_KMEANS_NITER, nredo=n_init, seed=seed,
                          verbose=False, min_points_per_centroid=1, max_points_per_centroid=1 << 30, **init)
        km.train(xs)
        _, labels = km.index.search(xs, 1)
        return labels[:, 0].astype(np.int64)
    if backend != "sklearn":
        raise ValueError(f"k-means backend must be sklearn or faiss, not {backend!r}")
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n_clusters, n_init=n_init, random_state=seed)
    return km.fit_predict(x).astype(np.int64)


def clustering_over_seeds(x, labels_true, seed: int, kmeans_seeds: int = 1, n_init: int = 10,
                          backend: str = "sklearn") -> dict:
    """k-means of x (k = distinct labels_true) run kmeans_seeds times, with seeds seed, seed+1, ...,
    each scored by clustering_scores: one k-means run is one draw of its local optimum.

    Returns "nmi", "ri", "ari", "ami": the mean over the runs; "nmi_std", "ri_std", "ari_std",
    "ami_std": their population standard deviation (ddof=0, numpy's default: the spread of these
    runs; 0.0 for one run, whose means are then exactly its scores); "kmeans_seeds", "n_clusters";
    "kmeans_per_seed": one {"seed", "nmi", "ri", "ari", "ami"} per run, in seed order.
    """
    if kmeans_seeds < 1:
        raise ValueError(f"kmeans_seeds must be >= 1, got {kmeans_seeds}")
    labels_true = np.asarray(labels_true)
    n_clusters = int(np.unique(labels_true).size)
    per_seed = [{"seed": s, **clustering_scores(labels_true, kmeans_labels(x, n_clusters, seed=s, n_init=n_init,
                                                                           backend=backend))}
                for s in range(seed, seed + kmeans_seeds)]
    values = {m: np.array([r[m] for r in per_seed], dtype=np.float64) for m in CLUSTERING_METRICS}
    out: dict = {m: float(v.mean()) for m, v in values.items()}
    out.update({f"{m}_std": float(v.std()) for m, v in values.items()})
    out.update(kmeans_seeds=int(kmeans_seeds), n_clusters=n_clusters, kmeans_per_seed=per_seed)
    return out


def average_precision_at_k(relevance, n_relevant: int, k: int = 100) -> float:
    """GLDv2 AP@k of one ranked list: sum_{i<=k} P@i * rel_i / min(n_relevant, k).

    relevance: 0/1 (or bool) per ranked result, best first; only the first k
    count. n_relevant: relevant images in the whole database (must be >= 1 and
    >= the relevant results listed).
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    rel = np.asarray(relevance).astype(bool).ravel()[:k]
    if n_relevant < 1:
        raise ValueError("AP is undefined for a query without relevant images")
    if rel.sum() > n_relevant:
        raise ValueError(f"{int(rel.sum())} relevant results listed but n_relevant={n_relevant}")
    hits = np.cumsum(rel)
    prec = hits / np.arange(1, rel.size + 1)
    return float(prec[rel].sum() / min(n_relevant, k))


def retrieval_scores(
    query_emb,
    query_labels,
    db_emb,
    db_labels,
    k: int = 100,
    chunk_size: int = 1024,
    index=None,
    return_ap: bool = False,
    exclude=None,
) -> dict:
    """Retrieval quality of embeddings: mAP@k, P@1, P@10, recall@k.

    Keys f"map@{k}", "p@1", "p@10", f"recall@{k}", "n_queries" (all queries
    given) and "n_queries_without_relevant". Means are over queries that have
    at least one same-label database image (GLDv2 likewise drops non-landmark
    queries); NaN if there are none. If k exceeds the database size the whole
    database is ranked. P@10 is the relevant share of the top min(10, n_db),
    so a perfect ranking scores 1 even on a database smaller than 10. recall@k
    is the share of a query's relevant database images found in its top k. index: a search over
    db_emb's rows (retrieval/index.py: flat, ivf, hnsw); None searches exactly. return_ap: also
    "ap", each query's AP@k (float64, one per query row; NaN for a query without relevant images),
    whose mean over the others is f"map@{k}". exclude: one database row per query left out of its
    results and of its relevant images (-1: none), for queries that are themselves database rows
    (every image queries the others); index.search must take exclude= then.
    """
    query_emb, query_labels, db_labels = np.asarray(query_emb), np.asarray(query_labels), np.asarray(db_labels)
    _check_retrieval_inputs(query_emb, query_labels, db_emb, db_labels, k)
    n_q = query_labels.size
    if exclude is not None:
        exclude = np.asarray(exclude, dtype=np.int64)
    n_rel, n_db = _relevant_counts(query_labels, db_labels, exclude)
    valid = n_rel > 0

    k_eff = max(1, min(k, n_db))
    k_p10 = max(1, min(10, n_db))
    k_search = max(k_eff, k_p10)  # deep enough for both the AP/recall cut-off and P@10
    ap, p1, p10, rec = (np.zeros(n_q) for _ in range(4))
    for s in range(0, n_q, chunk_size):
        sl = slice(s, min(s + chunk_size, n_q))
        excl = None if exclude is None else exclude[sl]
        if index is None:
            _, idx = search(query_emb[sl], db_emb, k_search, chunk_size=chunk_size, exclude=excl)
        else:
            _, idx = index.search(query_emb[sl], k_search, exclude=excl)
        rel = (db_labels[idx] == query_labels[sl, None]) & (idx >= 0)  # -1: an approximate index found fewer
        ap[sl], p1[sl], p10[sl], rec[sl] = _score_ranks(rel, n_rel[sl], k, k_eff, k_p10)

    def mean(x: np.ndarray) -> float:
        return float(x[valid].mean()) if valid.any() else float("nan")

    out = {
        f"map@{k}": mean(ap),
        "p@1": mean(p1),
        "p@10": mean(p10),
        f"recall@{k}": mean(rec),
        "n_queries": int(n_q),
        "n_queries_without_relevant": int((~valid).sum()),
    }
    if return_ap:
        out["ap"] = np.where(valid, ap, np.nan)
    return out


def _check_retrieval_inputs(query_emb: np.ndarray, query_labels: np.ndarray, db_emb, db_labels: np.ndarray,
                            k: int) -> None:
    if query_labels.ndim != 1 or query_labels.size != query_emb.shape[0]:
        raise ValueError("query_labels must be 1-D with one label per query row")
    if db_labels.ndim != 1 or db_labels.size != db_emb.shape[0]:
        raise ValueError("db_labels must be 1-D with one label per database row")
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if db_labels.size == 0:
        raise ValueError("database is empty")


def _relevant_counts(query_labels: np.ndarray, db_labels: np.ndarray, exclude: np.ndarray | None) -> tuple[np.ndarray, int]:
    """(each query's number of relevant database images: those sharing its label, less its excluded row;
    the database size each query is ranked against)."""
    n_db, n_q = db_labels.size, query_labels.size
    uniq, counts = np.unique(db_labels, return_counts=True)
    pos = np.clip(np.searchsorted(uniq, query_labels), 0, uniq.size - 1)
    n_rel = np.where(uniq[pos] == query_labels, counts[pos], 0)
    if exclude is not None:
        if exclude.shape != (n_q,) or np.any((exclude < -1) | (exclude >= n_db)):
            raise ValueError(f"exclude must hold one database row (or -1) per query, in [-1, {n_db})")
        n_rel = n_rel - ((exclude >= 0) & (db_labels[exclude] == query_labels))
        n_db -= 1 if n_q and (exclude >= 0).all() else 0
    return n_rel, n_db


def _score_ranks(rel: np.ndarray, n_rel: np.ndarray, k: int, k_eff: int, k_p10: int) -> tuple[np.ndarray, ...]:
    """(AP@k, P@1, P@10, recall@k) of each query row from its ranked results' relevance `rel`."""
    top = rel[:, :k_eff]
    hits = np.cumsum(top, axis=1)
    prec = hits / np.arange(1, k_eff + 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = (prec * top).sum(axis=1) / np.minimum(n_rel, k)
        rec = hits[:, -1] / n_rel
    return ap, rel[:, 0], rel[:, :k_p10].sum(axis=1) / k_p10, rec


def evaluate_embeddings(
    train_emb,
    train_labels,
    query_emb,
    query_labels,
    db_emb,
    db_labels,
    seed: int,
    n_init: int = 10,
    k: int = 100,
    kmeans: str = "sklearn",
    index=None,
    return_ap: bool = False,
    exclude=None,
    kmeans_seeds: int = 1,
) -> dict:
    """k-means (one cluster per distinct train label; kmeans: sklearn or faiss; kmeans_seeds runs
    with seeds seed, seed+1, ...) scores plus retrieval scores (index: a search over db_emb, None
    for exact).

    Returns clustering_over_seeds' keys (nmi, ri, ari, ami: the means over the k-means runs; their
    *_std, kmeans_seeds, n_clusters, kmeans_per_seed) and retrieval_scores' keys ("ap" too with
    return_ap).
    """
    out = clustering_over_seeds(train_emb, train_labels, seed=seed, kmeans_seeds=kmeans_seeds, n_init=n_init,
                                backend=kmeans)
    per_seed = out.pop("kmeans_per_seed")  # last in the dict: the headline scores first in metrics.json
    out.update(retrieval_scores(query_emb, query_labels, db_emb, db_labels, k=k, index=index,
                                return_ap=return_ap, exclude=exclude))
    out["kmeans_per_seed"] = per_seed
    return out
