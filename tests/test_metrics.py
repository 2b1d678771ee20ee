"""Tests for landmark_ae.retrieval.metrics against hand-computed values."""

import itertools
import math

import numpy as np
import pytest
from conftest import modules_loaded_by

from landmark_ae.retrieval.index import Index, build
from landmark_ae.retrieval.metrics import (
    average_precision_at_k,
    clustering_over_seeds,
    clustering_scores,
    evaluate_embeddings,
    kmeans_labels,
    retrieval_scores,
)

# --- Rand index (scikit-learn's rand_score: the seed's RI) -------------------------------------

# 6 items, C(6,2) = 15 pairs.
TRUE6 = [0, 0, 0, 1, 1, 1]
PRED6 = [0, 0, 1, 1, 2, 2]
# Same-true pairs: C(3,2)+C(3,2) = 6.  Same-pred pairs: {0,1},{2,3},{4,5} = 3.
# Together in both (TP): {0,1} (true 0,0) and {4,5} (true 1,1) = 2; {2,3} is not.
# FP = 3-2 = 1, FN = 6-2 = 4, TN = 15-2-1-4 = 8  =>  RI = (2+8)/15 = 2/3.


def ri(t, p) -> float:
    return clustering_scores(t, p)["ri"]


def brute_force_ri(t, p):
    agree = sum((t[i] == t[j]) == (p[i] == p[j]) for i, j in itertools.combinations(range(len(t)), 2))
    return agree / math.comb(len(t), 2)


def test_rand_index_hand_example():
    assert ri(TRUE6, PRED6) == pytest.approx(2 / 3, abs=1e-12)


def test_rand_index_permuted_ids_and_symmetry():
    # Renaming clusters 0->5, 1->3, 2->9 changes no pair: still 2/3.
    assert ri(TRUE6, [5, 5, 3, 3, 9, 9]) == pytest.approx(2 / 3, abs=1e-12)
    assert ri(PRED6, TRUE6) == pytest.approx(2 / 3, abs=1e-12)
    # String labels work too.
    assert ri(list("aaabbb"), list("xxyyzz")) == pytest.approx(2 / 3, abs=1e-12)


def test_rand_index_perfect_and_trivial():
    # Perfect agreement under different ids: every pair agrees -> 1.
    assert ri(TRUE6, [7, 7, 7, 2, 2, 2]) == 1.0
    # One cluster for all: TP = 6 (same-true pairs), FP = 15-6 = 9, TN = 0 -> 6/15.
    assert ri(TRUE6, [0] * 6) == pytest.approx(6 / 15, abs=1e-12)
    # All singletons: TP = 0, TN = 15 - 6 = 9 -> 9/15.
    assert ri(TRUE6, list(range(6))) == pytest.approx(9 / 15, abs=1e-12)
    # Fewer than two items: no pairs, defined as 1.
    assert ri([3], [4]) == 1.0


def test_rand_index_matches_pair_loop():
    rng = np.random.default_rng(0)
    for n, kt, kp in [(30, 3, 4), (57, 5, 2), (80, 10, 12), (40, 1, 6)]:
        t = rng.integers(0, kt, n)
        p = rng.integers(0, kp, n)
        assert ri(t, p) == pytest.approx(brute_force_ri(t, p), abs=1e-12)


def test_rand_index_large_n_no_pairs():
    # n = 200000 would be 2e10 pairs if enumerated; must finish quickly.
    # Two equal halves vs all-one-cluster: TP = 2*C(1e5,2), RI = TP / C(2e5,2).
    n = 200_000
    t = np.repeat([0, 1], n // 2)
    expected = 2 * math.comb(n // 2, 2) / math.comb(n, 2)
    assert ri(t, np.zeros(n, int)) == pytest.approx(expected, rel=1e-12)


def test_labelings_of_different_lengths_are_refused():
    with pytest.raises(ValueError):
        clustering_scores([0, 1], [0, 1, 1])
    with pytest.raises(ValueError):
        clustering_scores([[0, 1]], [[0, 1]])  # not 1-D


# --- NMI / ARI / AMI --------------------------------------------------------


def test_clustering_scores_perfect():
    s = clustering_scores(TRUE6, [4, 4, 4, 8, 8, 8])
    assert set(s) == {"nmi", "ri", "ari", "ami"}
    for key in s:
        assert s[key] == pytest.approx(1.0, abs=1e-12)


def test_clustering_scores_hand_example():
    s = clustering_scores(TRUE6, PRED6)
    # Contingency (rows true 0/1, cols pred 0/1/2): [[2,1,0],[0,1,2]].
    # ARI: sum C(n_ij,2) = 1+1 = 2; rows sum C(3,2)*2 = 6; cols sum C(2,2)*3 = 3;
    # expected = 6*3/15 = 1.2; max = (6+3)/2 = 4.5; ARI = (2-1.2)/(4.5-1.2) = 8/33.
    assert s["ari"] == pytest.approx(8 / 33, abs=1e-12)
    # MI: cells (0,0) and (1,2) each give (2/6) ln((2/6)/((1/2)(1/3))) = (1/3) ln 2,
    # the (1/6)-cells give (1/6) ln 1 = 0 -> MI = (2/3) ln 2.
    # H(true) = ln 2, H(pred) = ln 3; arithmetic NMI = MI / ((ln2 + ln3)/2) = (4/3) ln2 / ln6.
    assert s["nmi"] == pytest.approx((4 / 3) * math.log(2) / math.log(6), abs=1e-12)
    assert s["ri"] == pytest.approx(2 / 3, abs=1e-12)
    # AMI: E[MI] over the hypergeometric cell counts (rows a = 3, 3; columns b = 2, 2, 2; N = 6).
    # A cell (a=3, b=2) holds n in {0, 1, 2} with P = C(3,n)C(3,2-n)/C(6,2) = (3, 9, 3)/15 and adds
    # (n/6) ln(6n/6) = (n/6) ln n: only n = 2 counts, (3/15)(2/6) ln 2 = (1/15) ln 2 per cell;
    # 6 cells -> E[MI] = (2/5) ln 2. AMI = (MI - E[MI]) / (mean(H) - E[MI])
    # = ((2/3) ln 2 - (2/5) ln 2) / ((ln 2 + ln 3)/2 - (2/5) ln 2) = (4/15) ln 2 / (ln 3 / 2 + ln 2 / 10).
    emi = 0.4 * math.log(2)
    assert s["ami"] == pytest.approx((2 / 3 * math.log(2) - emi) / ((math.log(2) + math.log(3)) / 2 - emi), abs=1e-12)
    assert s["ami"] == pytest.approx((4 / 15) * math.log(2) / (math.log(3) / 2 + math.log(2) / 10), abs=1e-12)


def test_ari_and_ami_of_a_four_item_crossed_labelling():
    # true 0011, pred 0101: every contingency cell holds 1; C(4,2) = 6 pairs.
    s = clustering_scores([0, 0, 1, 1], [0, 1, 0, 1])
    # ARI: sum C(1,2) = 0; rows 2*C(2,2) = 2, cols 2; expected = 2*2/6 = 2/3; max = 2;
    # ARI = (0 - 2/3) / (2 - 2/3) = -1/2.
    assert s["ari"] == pytest.approx(-0.5, abs=1e-12)
    # MI = 0 (p_ij = 1/4 = p_i p_j). E[MI]: a cell (a=2, b=2, N=4) holds n in {0, 1, 2} with
    # P = (1, 4, 1)/6, adding (n/4) ln(4n/4): only n = 2 counts, (1/6)(1/2) ln 2; 4 cells -> (1/3) ln 2.
    # AMI = (0 - ln2/3) / (ln 2 - ln2/3) = -1/2.
    assert s["ami"] == pytest.approx(-0.5, abs=1e-12)
    assert s["nmi"] == pytest.approx(0.0, abs=1e-12)
    assert s["ri"] == pytest.approx(2 / 6, abs=1e-12)  # agreeing pairs: {0,3} and {1,2} (apart in both)


def test_clustering_scores_independent_balanced():
    # 8 items, true 00001111, pred 00110011: every contingency cell holds 2.
    t = [0, 0, 0, 0, 1, 1, 1, 1]
    p = [0, 0, 1, 1, 0, 0, 1, 1]
    s = clustering_scores(t, p)
    # p_ij = 1/4 = p_i p_j everywhere -> MI = 0 -> NMI = 0.
    assert s["nmi"] == pytest.approx(0.0, abs=1e-12)
    # ARI: sum C(2,2)*4 = 4; rows 2*C(4,2) = 12, cols 12; C(8,2) = 28;
    # expected = 12*12/28 = 36/7; max = 12; ARI = (4-36/7)/(12-36/7) = (-8/7)/(48/7) = -1/6.
    assert s["ari"] == pytest.approx(-1 / 6, abs=1e-12)
    # RI = (28 + 2*4 - 12 - 12)/28 = 12/28 = 3/7.
    assert s["ri"] == pytest.approx(3 / 7, abs=1e-12)
    # AMI = (MI - E[MI]) / (mean(H) - E[MI]) with MI = 0, H = ln 2 for both.
    # Per cell, n_ij ~ hypergeometric(N=8, a=4, b=4): P(n) = C(4,n)C(4,4-n)/C(8,4)
    # = [1,16,36,16,1]/70 for n = 0..4, contributing (n/8) ln(8n/(4*4)) = (n/8) ln(n/2).
    # E[MI] = 4 cells * sum_n P(n) (n/8) ln(n/2)
    #       = 4 * (16*(1/8)ln(1/2) + 36*0 + 16*(3/8)ln(3/2) + 1*(4/8)ln 2) / 70.
    emi = 4 * (16 * (1 / 8) * math.log(0.5) + 16 * (3 / 8) * math.log(1.5) + 0.5 * math.log(2)) / 70
    # = 4 * (-1.386294 + 2.432766 + 0.346574) / 70 = 4 * 1.393046 / 70 = 0.079604
    assert emi == pytest.approx(0.079604, abs=1e-6)
    # AMI = -0.079604 / (0.693147 - 0.079604) = -0.129745
    assert s["ami"] == pytest.approx((0 - emi) / (math.log(2) - emi), abs=1e-9)
    assert s["ami"] == pytest.approx(-0.129745, abs=1e-6)


def test_ari_near_zero_for_independent_random_labels():
    rng = np.random.default_rng(1)
    t = rng.integers(0, 5, 20000)
    p = rng.integers(0, 5, 20000)
    s = clustering_scores(t, p)
    assert abs(s["ari"]) < 0.01
    assert abs(s["ami"]) < 0.01
    assert s["nmi"] < 0.01


# --- k-means ----------------------------------------------------------------


def blobs(rng, centers, per, spread=0.1):
    x = np.concatenate([c + spread * rng.normal(size=(per, len(c))) for c in centers])
    y = np.repeat(np.arange(len(centers)), per)
    return x.astype(np.float32), y


def test_kmeans_labels_recovers_blobs_and_is_seeded():
    rng = np.random.default_rng(2)
    x, y = blobs(rng, [(0, 0), (10, 0), (0, 10)], 20)
    lab = kmeans_labels(x, 3, seed=0, n_init=3)
    assert lab.dtype == np.int64 and lab.shape == (60,)
    assert clustering_scores(y, lab)["ri"] == 1.0
    np.testing.assert_array_equal(lab, kmeans_labels(x, 3, seed=0, n_init=3))
    with pytest.raises(ValueError):
        kmeans_labels(x, 61, seed=0)


# --- AP@k -------------------------------------------------------------------


@pytest.mark.parametrize(
    "relevance, n_relevant, k, expected",
    [
        # Hits at ranks 1 and 3: (1/1 + 2/3) / min(2, 100) = 0.8333...
        ([1, 0, 1, 0, 0], 2, 100, (1 / 1 + 2 / 3) / 2),
        # 4 relevant in the database, only 2 found (ranks 2, 5): (1/2 + 2/5)/4 = 0.225.
        ([0, 1, 0, 0, 1], 4, 5, (1 / 2 + 2 / 5) / 4),
        # n_relevant = 10 > k = 3: divisor is k; rank 4 is cut off: (1/1 + 2/2)/3.
        ([1, 1, 0, 1], 10, 3, (1 + 1) / 3),
        # Perfect ranking of all 3 relevant: (1 + 1 + 1)/3 = 1.
        ([1, 1, 1, 0], 3, 100, 1.0),
        # No hit in the top k: 0.
        ([0, 0, 0], 1, 3, 0.0),
        # A hit beyond k does not count: only rank 2 -> (1/2)/min(2, 2).
        ([0, 1, 0, 1], 2, 2, 0.5 / 2),
        # bool input; hits at 2, 3: (1/2 + 2/3)/2 = 7/12.
        (np.array([False, True, True]), 2, 100, 7 / 12),
    ],
)
def test_average_precision_hand_examples(relevance, n_relevant, k, expected):
    assert average_precision_at_k(relevance, n_relevant, k) == pytest.approx(expected, abs=1e-12)


def test_average_precision_errors():
    with pytest.raises(ValueError):
        average_precision_at_k([0, 0], 0)  # no relevant image: undefined
    with pytest.raises(ValueError):
        average_precision_at_k([1, 1, 1], 2)  # more hits than relevant images
    with pytest.raises(ValueError):
        average_precision_at_k([1], 1, k=0)


# --- retrieval_scores: 1-D end-to-end fixture -------------------------------

# Database (index: position, label):
#   0: 0.0 A   1: 1.0 A   2: 2.0 B   3: 10.0 B   4: 11.0 A   5: 20.0 C
DB_X = np.array([[0.0], [1.0], [2.0], [10.0], [11.0], [20.0]], dtype=np.float32)
DB_Y = np.array(["A", "A", "B", "B", "A", "C"])
# Queries:
#   q0 at 0.4, label A: distances 0.4, 0.6, 1.6, 9.6, 10.6, 19.6 -> ranking 0,1,2,3,4,5
#       relevance 1,1,0,0,1,0; A has 3 database images.
#   q1 at 10.6, label B: distances idx4 0.4, idx3 0.6, idx2 8.6, idx5 9.4, idx1 9.6, idx0 10.6
#       ranking 4,3,2,5,1,0 -> relevance 0,1,1,0,0,0; B has 2 database images.
#   q2 at 5.0, label D: no D in the database -> excluded from every mean.
Q_X = np.array([[0.4], [10.6], [5.0]], dtype=np.float32)
Q_Y = np.array(["A", "B", "D"])


def test_retrieval_scores_hand_fixture_k100():
    s = retrieval_scores(Q_X, Q_Y, DB_X, DB_Y, k=100)
    assert set(s) == {"map@100", "p@1", "p@10", "recall@100", "n_queries", "n_queries_without_relevant"}
    # AP q0 = (1/1 + 2/2 + 3/5)/min(3,100) = 2.6/3 = 13/15
    # AP q1: hits at ranks 2, 3 -> (1/2 + 2/3)/min(2,100) = 7/12
    # mAP = (13/15 + 7/12)/2 = (52/60 + 35/60)/2 = 87/120 = 0.725
    assert s["map@100"] == pytest.approx(87 / 120, abs=1e-12)
    # P@1: q0 rank 1 relevant, q1 not -> 1/2.
    assert s["p@1"] == pytest.approx(0.5, abs=1e-12)
    # P@10 over min(10, 6) = 6 results: q0 3/6, q1 2/6 -> (1/2 + 1/3)/2 = 5/12.
    assert s["p@10"] == pytest.approx(5 / 12, abs=1e-12)
    # k = 100 > 6: whole database ranked, every relevant image found -> 1.
    assert s["recall@100"] == pytest.approx(1.0, abs=1e-12)
    assert s["n_queries"] == 3
    assert s["n_queries_without_relevant"] == 1


def test_retrieval_scores_returns_each_querys_ap_on_request():
    s = retrieval_scores(Q_X, Q_Y, DB_X, DB_Y, k=100, chunk_size=2, return_ap=True)
    # q0 13/15, q1 7/12 (as above); q2 has no relevant image: NaN. Their mean is the mAP.
    assert s["ap"][:2] == pytest.approx([13 / 15, 7 / 12], abs=1e-12) and math.isnan(s["ap"][2])
    assert np.nanmean(s["ap"]) == pytest.approx(s["map@100"], abs=1e-12)
    assert "ap" not in retrieval_scores(Q_X, Q_Y, DB_X, DB_Y, k=100)


def test_retrieval_scores_hand_fixture_k3():
    s = retrieval_scores(Q_X, Q_Y, DB_X, DB_Y, k=3, chunk_size=2)
    # Top 3: q0 relevance 1,1,0 -> AP = (1 + 1)/min(3,3) = 2/3, recall = 2/3.
    #        q1 relevance 0,1,1 -> AP = (1/2 + 2/3)/min(2,3) = 7/12, recall = 2/2.
    # mAP@3 = (2/3 + 7/12)/2 = 15/24 = 0.625; recall@3 = (2/3 + 1)/2 = 5/6.
    assert s["map@3"] == pytest.approx(15 / 24, abs=1e-12)
    assert s["recall@3"] == pytest.approx(5 / 6, abs=1e-12)
    # P@1 and P@10 do not depend on k (search goes 10 deep for P@10): 1/2, 5/12.
    assert s["p@1"] == pytest.approx(0.5, abs=1e-12)
    assert s["p@10"] == pytest.approx(5 / 12, abs=1e-12)


def test_retrieval_scores_no_valid_query_gives_nan():
    s = retrieval_scores(Q_X[2:], Q_Y[2:], DB_X, DB_Y, k=5)
    assert math.isnan(s["map@5"]) and math.isnan(s["p@1"])
    assert s["n_queries"] == 1 and s["n_queries_without_relevant"] == 1


def test_retrieval_scores_label_length_mismatch():
    with pytest.raises(ValueError):
        retrieval_scores(Q_X, Q_Y[:2], DB_X, DB_Y)


def test_retrieval_scores_matches_per_query_ap():
    # Cross-check the vectorised mAP against the scalar average_precision_at_k.
    rng = np.random.default_rng(3)
    db = rng.normal(size=(120, 4)).astype(np.float32)
    dby = rng.integers(0, 6, 120)
    q = rng.normal(size=(15, 4)).astype(np.float32)
    qy = rng.integers(0, 7, 15)  # label 6 never in the database
    k = 20
    d = ((q[:, None].astype(np.float64) - db[None]) ** 2).sum(-1)
    order = np.argsort(d, axis=1, kind="stable")
    aps = []
    for i in range(15):
        n_rel = int((dby == qy[i]).sum())
        if n_rel:
            aps.append(average_precision_at_k(dby[order[i]] == qy[i], n_rel, k))
    s = retrieval_scores(q, qy, db, dby, k=k, chunk_size=4)
    assert s["map@20"] == pytest.approx(np.mean(aps), abs=1e-12)
    assert s["n_queries_without_relevant"] == 15 - len(aps)


# --- evaluate_embeddings: 2-D end-to-end fixture ----------------------------


def test_evaluate_embeddings_separated_blobs():
    rng = np.random.default_rng(4)
    centers = [(0, 0), (10, 0), (0, 10)]
    train_x, train_y = blobs(rng, centers, 10)
    db_x, db_y = blobs(rng, centers, 4)  # 12 database images, 4 per label
    q_x, q_y = blobs(rng, centers, 2)
    s = evaluate_embeddings(train_x, train_y, q_x, q_y, db_x, db_y, seed=0, n_init=2)
    # 3 well-separated blobs, 3 labels: k-means recovers them exactly.
    assert s["n_clusters"] == 3
    for key in ("nmi", "ri", "ari", "ami"):
        assert s[key] == pytest.approx(1.0, abs=1e-12)
    # Each query's 4 nearest are its own 4 database images: AP = 1, P@1 = 1,
    # recall = 4/4 = 1, P@10 = 4 relevant / min(10, 12) = 0.4.
    assert s["map@100"] == pytest.approx(1.0, abs=1e-12)
    assert s["p@1"] == 1.0
    assert s["p@10"] == pytest.approx(0.4, abs=1e-12)
    assert s["recall@100"] == pytest.approx(1.0, abs=1e-12)
    assert s["n_queries"] == 6 and s["n_queries_without_relevant"] == 0


# --- clustering over several k-means seeds -----------------------------------


def overlapping_blobs() -> tuple[np.ndarray, np.ndarray]:
    """4 landmarks x 10 points, overlapping: with n_init=1, seeds 3 and 4 find different clusterings."""
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(4), 10)
    return rng.normal(size=(4, 2))[labels] * 2 + rng.normal(size=(40, 2)), labels


def test_two_kmeans_seeds_by_hand_give_numpys_mean_and_population_std():
    from sklearn.metrics import normalized_mutual_info_score

    x, y = overlapping_blobs()
    by_hand = [normalized_mutual_info_score(y, kmeans_labels(x, 4, seed=s, n_init=1)) for s in (3, 4)]
    assert by_hand[0] != by_hand[1]  # the seeds disagree: the std below is not trivially 0
    s = clustering_over_seeds(x, y, seed=3, kmeans_seeds=2, n_init=1)
    assert [r["seed"] for r in s["kmeans_per_seed"]] == [3, 4]
    assert [r["nmi"] for r in s["kmeans_per_seed"]] == pytest.approx(by_hand, abs=1e-12)
    assert s["nmi"] == pytest.approx(np.mean(by_hand), abs=1e-12)
    assert s["nmi_std"] == pytest.approx(np.std(by_hand), abs=1e-12)  # ddof=0
    assert s["nmi_std"] == pytest.approx(abs(by_hand[0] - by_hand[1]) / 2, abs=1e-12)
    for m in ("ri", "ari", "ami"):
        values = [r[m] for r in s["kmeans_per_seed"]]
        assert s[m] == pytest.approx(np.mean(values), abs=1e-12) and s[f"{m}_std"] == pytest.approx(np.std(values))
    assert s["kmeans_seeds"] == 2 and s["n_clusters"] == 4


def test_one_kmeans_seed_is_exactly_the_single_run():
    x, y = overlapping_blobs()
    single = clustering_scores(y, kmeans_labels(x, 4, seed=7, n_init=2))
    s = clustering_over_seeds(x, y, seed=7, kmeans_seeds=1, n_init=2)
    for m in ("nmi", "ri", "ari", "ami"):
        assert s[m] == single[m] and s[f"{m}_std"] == 0.0  # exactly: no rounding on the way
    e = evaluate_embeddings(x, y, x[:4], y[:4], x, y, seed=7, n_init=2, kmeans_seeds=1)
    assert {m: e[m] for m in single} == single and e["kmeans_seeds"] == 1
    with pytest.raises(ValueError, match="kmeans_seeds must be >= 1"):
        clustering_over_seeds(x, y, seed=0, kmeans_seeds=0)


def test_metrics_import_does_not_load_sklearn():
    assert modules_loaded_by("landmark_ae.retrieval.metrics") == set()


def test_all_vs_all_metrics_leave_the_query_out_by_hand():
    # points on a line: 0, 1 and 6.2 are landmark 0; 10, 11 landmark 1
    x = np.array([[0.0], [1.0], [10.0], [11.0], [6.2]], dtype=np.float32)
    labels = np.array([0, 0, 1, 1, 0])
    # query 4 (6.2) ranks 10 (d 3.8), 11 (4.8), 1 (5.2), 0 (6.2): AP = (1/3 + 2/4) / 2; the rest 1
    for index in (None, Index(x), build(x, {"name": "flat"}, l2=False)):
        r = retrieval_scores(x, labels, x, labels, k=100, index=index, exclude=np.arange(5), return_ap=True)
        assert r["ap"][4] == pytest.approx((1 / 3 + 2 / 4) / 2)
        assert r["map@100"] == pytest.approx((4 + (1 / 3 + 2 / 4) / 2) / 5)
        assert r["p@1"] == pytest.approx(0.8)  # query 4's first result is landmark 1
        assert r["p@10"] == pytest.approx((2 + 2 + 1 + 1 + 2) / 4 / 5)  # of the 4 other images
        assert r["recall@100"] == pytest.approx(1.0)
    # without exclusion every query finds itself first
    assert retrieval_scores(x, labels, x, labels, k=100)["p@1"] == 1.0
