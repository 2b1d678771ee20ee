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
from dataclasses import dataclass, field

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from landmark_ae.retrieval.index import build
from landmark_ae.retrieval.search import search
from landmark_ae.script_config import parse_args


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


@dataclass
class BenchSearchArgs:
    n: int = 1_000_000
    dim: int = 192
    queries: int = 1000
    k: int = 100
    centres: int = 1000
    noise: float = 0.5
    hnsw_n: int = 200_000
    nprobe: list[int] = field(default_factory=lambda: [8, 16, 32, 64])
    # efSearch, M, efConstruction: FAISS's own names for the index settings
    efSearch: list[int] = field(default_factory=lambda: [64, 128, 256])
    nlist: int = 1024
    M: int = 32
    efConstruction: int = 80
    kmeans: int = 1  # 0: skip the k-means comparison
    kmeans_n: int = 16000
    kmeans_dim: int = 1568
    kmeans_k: int = 1000
    seed: int = 0


Row = tuple[str, str, float, "float | None", float, float]


class Backends:
    """Builds each index on the data, times its searches and records a table row per setting."""

    def __init__(self, q: np.ndarray, k: int, threads: int, rows: list[Row]):
        self.q, self.k, self.threads, self.rows = q, k, threads, rows

    def run(self, name: str, cfg: dict, data: np.ndarray, gt: np.ndarray, retune: list[tuple[str, object]] | None = None):
        import faiss

        faiss.omp_set_num_threads(self.threads)
        start = time.perf_counter()
        index = build(data, cfg, l2=True)
        build_s = time.perf_counter() - start
        for label, setter in retune or [(name, None)]:
            if setter is not None:
                setter(index.index)
            qps1, _ = timed_search(index, self.q, self.k, 1)
            qpsn, pos = timed_search(index, self.q, self.k, self.threads)
            r = recall(pos, gt)
            self.rows.append((label, f"{len(data):,}", build_s, qps1, qpsn, r))
            print(f"{label}\tbuild_s={build_s:.1f} qps_1={qps1:.1f} qps_{self.threads}={qpsn:.1f} recall@{self.k}={r:.4f}")
        return index


def exact(q: np.ndarray, x: np.ndarray, k: int, rows: list[Row], key: str) -> np.ndarray:
    """numpy's exact search: the ground truth, and its throughput as a row."""
    start = time.perf_counter()
    _, truth = search(q, x, k)
    qps = len(q) / (time.perf_counter() - start)
    rows.append(("exact (numpy)", f"{len(x):,}", 0.0, None, qps, 1.0))
    print(f"{key}\t{qps:.1f}")
    return truth


def indexes(args: BenchSearchArgs, x: np.ndarray, q: np.ndarray, threads: int) -> list[Row]:
    """Exact, flat, IVF at each nprobe and HNSW at each efSearch (on the first hnsw_n rows)."""
    from landmark_ae.retrieval.index import ivf_nlist

    rows: list[Row] = []
    truth = exact(q, x, args.k, rows, "exact_qps")
    backends = Backends(q, args.k, threads, rows)
    backends.run("flat", {"name": "flat"}, x, truth)
    nlist = ivf_nlist(len(x), args.nlist)
    backends.run("ivf", {"name": "ivf", "nlist": nlist, "nprobe": args.nprobe[0], "seed": args.seed}, x, truth,
                 [(f"ivf nlist={nlist} nprobe={p}", lambda index, p=p: setattr(index, "nprobe", p)) for p in args.nprobe])
    hnsw_n = min(len(x), args.hnsw_n)
    sub_truth = exact(q, x[:hnsw_n], args.k, rows, f"exact_qps_{hnsw_n}") if hnsw_n < len(x) else truth
    M, efc = args.M, args.efConstruction
    backends.run("hnsw", {"name": "hnsw", "M": M, "efConstruction": efc, "efSearch": args.efSearch[0]}, x[:hnsw_n],
                 sub_truth, [(f"hnsw M={M} efC={efc} efSearch={ef}", lambda index, ef=ef: setattr(index.hnsw, "efSearch", ef))
                             for ef in args.efSearch])
    return rows


def kmeans_table(args: BenchSearchArgs, threads: int) -> None:
    """FAISS's k-means against scikit-learn's on seeded Gaussian clusters: seconds and NMI."""
    import faiss

    from landmark_ae.retrieval.metrics import clustering_scores, kmeans_labels

    kn, kd, kk = args.kmeans_n, args.kmeans_dim, args.kmeans_k
    krng = np.random.default_rng(args.seed + 1)
    kc = krng.standard_normal((kk, kd), dtype=np.float32)
    truth_labels = krng.integers(0, kk, kn)
    kx = kc[truth_labels] + args.noise * krng.standard_normal((kn, kd), dtype=np.float32)
    faiss.omp_set_num_threads(threads)
    print()
    print(f"kmeans\t{kn} x {kd}, k={kk}, n_init=1, {threads} threads")
    print("| k-means | seconds | NMI vs true centres |")
    print("|---|---:|---:|")
    for backend in ("faiss", "sklearn"):
        start = time.perf_counter()
        labels = kmeans_labels(kx, kk, seed=args.seed, n_init=1, backend=backend)
        secs = time.perf_counter() - start
        print(f"| {backend} | {secs:.1f} | {clustering_scores(truth_labels, labels)['nmi']:.3f} |", flush=True)


def main(argv: list[str]) -> None:
    import faiss

    args, _ = parse_args(BenchSearchArgs, argv, "bench_search", doc=__doc__)
    threads = faiss.omp_get_max_threads()
    rng = np.random.default_rng(args.seed)
    centres = rng.standard_normal((args.centres, args.dim), dtype=np.float32)
    x = clustered(args.n, args.dim, centres, args.noise, rng)
    q = clustered(args.queries, args.dim, centres, args.noise, rng)
    print(f"machine\t{platform.processor() or platform.machine()}, {os.cpu_count()} cores, faiss {faiss.__version__}")
    print(f"data\t{args.n} x {args.dim} float32, L2-normalised, {args.centres} Gaussian centres, noise {args.noise}, "
          f"seed {args.seed}")
    print(f"queries\t{args.queries}, k={args.k}; threads: 1 and {threads}")
    rows = indexes(args, x, q, threads)
    print()
    print(f"| backend | database | build s | q/s, 1 thread | q/s, {threads} threads | recall@{args.k} |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, size, build_s, qps1, qpsn, r in rows:
        print(f"| {name} | {size} | {build_s:.1f} | {'-' if qps1 is None else f'{qps1:,.0f}'} | {qpsn:,.0f} | {r:.3f} |")
    if args.kmeans != 0:
        kmeans_table(args, threads)


if __name__ == "__main__":
    main(sys.argv[1:])
