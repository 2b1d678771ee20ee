"""Database search and k-means at GLDv2 scale: exact (numpy) vs FAISS flat, IVF and HNSW.

    python scripts/bench_search.py [n=1000000] [dim=192] [queries=1000] [k=100] [centres=1000]
        [noise=0.5] [hnsw_n=200000] [nprobe=8,16,32,64] [efSearch=64,128,256] [nlist=1024] [M=32]
        [efConstruction=80] [kmeans=1] [kmeans_n=16000] [kmeans_dim=1568] [kmeans_k=1000] [seed=0]

Rows and queries: seeded Gaussian centres, each row a centre plus Gaussian noise, L2-normalised (as
`embed l2=true` stores them), float32. For each backend: build seconds, queries/s for the batch of all
queries with 1 FAISS thread and with the machine's threads (exact: numpy with its BLAS threads), and
recall@k against exact. hnsw_n < n builds HNSW on the first hnsw_n rows only (minutes per million on
few cores) with its own exact ground truth and exact throughput on that subset. Prints key<TAB>value
lines, then a Markdown table.
"""

from __future__ import annotations

import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from landmark_ae.retrieval.index import build
from landmark_ae.retrieval.search import search


def clustered(n: int, dim: int, centres: np.ndarray, noise: float, rng: np.random.Generator) -> np.ndarray:
    out = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):
        e = min(s + 100_000, n)
        block = centres[rng.integers(0, len(centres), e - s)] + noise * rng.standard_normal((e - s, dim), dtype=np.float32)
        out[s:e] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0]) & set(b)) / len(b) for a, b in zip(found, truth, strict=True)]))


def timed_search(index, q: np.ndarray, k: int, threads: int) -> tuple[float, np.ndarray]:
    import faiss

    faiss.omp_set_num_threads(threads)
    start = time.perf_counter()
    _, pos = index.search(q, k)
    return len(q) / (time.perf_counter() - start), pos


def main(argv: list[str]) -> None:
    import faiss

    opts = dict(a.split("=", 1) for a in argv if "=" in a)
    n, dim = int(opts.get("n", 1_000_000)), int(opts.get("dim", 192))
    nq, k = int(opts.get("queries", 1000)), int(opts.get("k", 100))
    n_centres, noise, seed = int(opts.get("centres", 1000)), float(opts.get("noise", 0.5)), int(opts.get("seed", 0))
    hnsw_n = min(n, int(opts.get("hnsw_n", 200_000)))
    nprobes = [int(v) for v in opts.get("nprobe", "8,16,32,64").split(",")]
    efs = [int(v) for v in opts.get("efSearch", "64,128,256").split(",")]
    threads = faiss.omp_get_max_threads()
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_centres, dim), dtype=np.float32)
    x = clustered(n, dim, centres, noise, rng)
    q = clustered(nq, dim, centres, noise, rng)
    print(f"machine\t{platform.processor() or platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__}")
    print(f"data\t{n} x {dim} float32, L2-normalised, {n_centres} Gaussian centres, noise {noise}, seed {seed}")
    print(f"queries\t{nq}, k={k}; threads: 1 and {threads}")
    rows: list[tuple[str, str, float, float | None, float, float]] = []

    start = time.perf_counter()
    _, truth = search(q, x, k)
    exact_qps = nq / (time.perf_counter() - start)
    rows.append(("exact (numpy)", f"{n:,}", 0.0, None, exact_qps, 1.0))
    print(f"exact_qps\t{exact_qps:.1f}")

    def run(name: str, cfg: dict, data: np.ndarray, gt: np.ndarray, retune: list[tuple[str, object]] | None = None):
        start = time.perf_counter()
        index = build(data, cfg, l2=True)
        build_s = time.perf_counter() - start
        for label, setter in retune or [(name, None)]:
            if setter is not None:
                setter(index.index)
            qps1, _ = timed_search(index, q, k, 1)
            qpsn, pos = timed_search(index, q, k, threads)
            r = recall(pos, gt)
            rows.append((label, f"{len(data):,}", build_s, qps1, qpsn, r))
            print(f"{label}\tbuild_s={build_s:.1f} qps_1={qps1:.1f} qps_{threads}={qpsn:.1f} recall@{k}={r:.4f}")
        return index

    faiss.omp_set_num_threads(threads)
    run("flat", {"name": "flat"}, x, truth)
    nlist = int(opts.get("nlist", 1024))

    def set_nprobe(p: int):
        return lambda index: setattr(index, "nprobe", p)

    faiss.omp_set_num_threads(threads)
    from landmark_ae.retrieval.index import ivf_nlist

    nlist = ivf_nlist(n, nlist)
    run("ivf", {"name": "ivf", "nlist": nlist, "nprobe": nprobes[0], "seed": seed}, x, truth,
        [(f"ivf nlist={nlist} nprobe={p}", set_nprobe(p)) for p in nprobes])

    sub_truth = truth
    if hnsw_n < n:
        start = time.perf_counter()
        _, sub_truth = search(q, x[:hnsw_n], k)
        sub_qps = nq / (time.perf_counter() - start)
        rows.append(("exact (numpy)", f"{hnsw_n:,}", 0.0, None, sub_qps, 1.0))
        print(f"exact_qps_{hnsw_n}\t{sub_qps:.1f}")

    def set_ef(ef: int):
        return lambda index: setattr(index.hnsw, "efSearch", ef)

    M, efc = int(opts.get("M", 32)), int(opts.get("efConstruction", 80))
    faiss.omp_set_num_threads(threads)
    run("hnsw", {"name": "hnsw", "M": M, "efConstruction": efc, "efSearch": efs[0]}, x[:hnsw_n], sub_truth,
        [(f"hnsw M={M} efC={efc} efSearch={ef}", set_ef(ef)) for ef in efs])

    print()
    print(f"| backend | database | build s | q/s, 1 thread | q/s, {threads} threads | recall@{k} |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, size, build_s, qps1, qpsn, r in rows:
        print(f"| {name} | {size} | {build_s:.1f} | {'-' if qps1 is None else f'{qps1:,.0f}'} | {qpsn:,.0f} | {r:.3f} |")

    if opts.get("kmeans", "1") != "0":
        from landmark_ae.retrieval.metrics import clustering_scores, kmeans_labels

        kn, kd, kk = int(opts.get("kmeans_n", 16000)), int(opts.get("kmeans_dim", 1568)), int(opts.get("kmeans_k", 1000))
        krng = np.random.default_rng(seed + 1)
        kc = krng.standard_normal((kk, kd), dtype=np.float32)
        truth_labels = krng.integers(0, kk, kn)
        kx = kc[truth_labels] + noise * krng.standard_normal((kn, kd), dtype=np.float32)
        faiss.omp_set_num_threads(threads)
        print()
        print(f"kmeans\t{kn} x {kd}, k={kk}, n_init=1, {threads} threads")
        print("| k-means | seconds | NMI vs true centres |")
        print("|---|---:|---:|")
        for backend in ("faiss", "sklearn"):
            start = time.perf_counter()
            labels = kmeans_labels(kx, kk, seed=seed, n_init=1, backend=backend)
            secs = time.perf_counter() - start
            print(f"| {backend} | {secs:.1f} | {clustering_scores(truth_labels, labels)['nmi']:.3f} |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
