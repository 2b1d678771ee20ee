"""`landmark-ae export`: an embed run as a bundle anyone can use without torch or this package.

    encoder.onnx          uint8 (batch, S, S, 3) RGB images at the stored side S -> raw rows (retrieval/onnx_export.py)
    preprocess.json       how a photo becomes that input: decode, resize filter, value range, channel order
    transform.npz         the fitted post-processing: l2 (bool), and with PCA-whitening mean (D,) and
                          projection (D, d): row -> L2 -> (row - mean) @ projection -> L2 (postprocess.py)
    postprocess.json      those steps in words, and the run's DBA / αQE / diffusion settings
    embeddings.parquet    format=parquet: id, path, split, label, class_name, vector (the stored rows)
    embeddings.npy, index.csv   format=npy: the run's own files
    database.npy          dba_k > 0: the database rows after DBA, as the run searches them
    diffusion.npz         diffusion_k > 0: the database's neighbour graph as a CSR matrix (data, indices, indptr, shape)
    bundle.json           what made it (embed run, model, checkpoint sha256) and the files

The bundle is written in a temp folder beside `out` and renamed into place whole.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from landmark_ae.config import enum_value
from landmark_ae.errors import UserError
from landmark_ae.retrieval.diffusion import DIFFUSION_FILE
from landmark_ae.retrieval.embed_run import DATABASE_FILE, EMBED_SETTINGS, UNLABELLED, EmbedRun, resolve_embed_run
from landmark_ae.retrieval.onnx_encoder import ONNX_FILE
from landmark_ae.retrieval.preprocess import preprocess_spec
from landmark_ae.runs import check_artifacts


def embeddings_table(run: EmbedRun) -> Any:
    """The run's rows as a pyarrow Table: id, path, split, label (null when unlabelled), class_name, vector."""
    import pyarrow as pa

    rows = np.ascontiguousarray(run.embeddings, dtype=np.float32)
    names = run.class_names
    labels = [int(x) if x != UNLABELLED else None for x in run.labels]
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1), pa.float32()), int(rows.shape[1]))
    return pa.table({"id": pa.array(run.ids, pa.string()), "path": pa.array(run.paths, pa.string()),
                     "split": pa.array([str(s) for s in run.splits], pa.string()), "label": pa.array(labels, pa.int64()),
                     "class_name": pa.array([names.get(x) if x is not None else None for x in labels], pa.string()),
                     "vector": vectors})


def postprocess_spec(meta: dict[str, Any]) -> dict[str, Any]:
    settings = {key: meta.get(key) for key in EMBED_SETTINGS}
    return {"steps": "row (encoder.onnx output) -> L2 if l2 -> (row - mean) @ projection if transform.npz has them "
                     "-> L2 if l2 (transform.npz); then search the vectors by Euclidean distance",
            "settings": settings, "raw_dim": meta.get("raw_dim"), "dim": meta.get("dim"),
            "dba": "the database rows were replaced by the sim^dba_alpha-weighted mean of themselves and their dba_k "
                   "nearest database rows, then L2 (database.npy)" if settings.get("dba_k") else None,
            "qe": "each query is replaced by the sim^qe_alpha-weighted mean of itself and its first qe_k results, "
                  "L2, and searched again" if settings.get("qe_k") else None,
            "diffusion": "rows are ranked by f solving (I - diffusion_alpha S) f = y, S the graph in diffusion.npz (the "
                         "normalised mutual diffusion_k-NN graph of the database, weights sim^3), y the query's first "
                         "diffusion_query_k results weighted sim^3" if settings.get("diffusion_k") else None}


def write_bundle(run: EmbedRun, folder: Path, fmt: str) -> list[str]:
    """The bundle's files in `folder` (which exists and is empty); their names."""
    meta = run.meta
    shutil.copyfile(run.run_dir / ONNX_FILE, folder / ONNX_FILE)
    spec = preprocess_spec(int(meta["image_size"]), int(meta.get("input_size") or meta["model_config"]["input_size"]))
    (folder / "preprocess.json").write_text(json.dumps(spec, indent=2) + "\n")
    run.transform().save(folder / "transform.npz")
    (folder / "postprocess.json").write_text(json.dumps(postprocess_spec(meta), indent=2) + "\n")
    files = [ONNX_FILE, "preprocess.json", "transform.npz", "postprocess.json"]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(embeddings_table(run), folder / "embeddings.parquet")
        files.append("embeddings.parquet")
    else:
        for name in ("embeddings.npy", "index.csv"):
            shutil.copyfile(run.run_dir / name, folder / name)
        files += ["embeddings.npy", "index.csv"]
    if run.dba_k:
        np.save(folder / DATABASE_FILE, np.asarray(run.database_rows()))
        files.append(DATABASE_FILE)
    if run.diffusion_k:
        shutil.copyfile(run.run_dir / DIFFUSION_FILE, folder / DIFFUSION_FILE)
        files.append(DIFFUSION_FILE)
    about = {"embed_run": str(run.run_dir), "model": meta["model"], "checkpoint_sha256": meta["checkpoint_sha256"],
             "data": meta["data"], "rows": len(run.ids), "dim": meta["dim"], "files": [*files, "bundle.json"]}
    (folder / "bundle.json").write_text(json.dumps(about, indent=2) + "\n")
    return [*files, "bundle.json"]


def run_export(cfg: Any, run_dir: Path) -> dict[str, Any]:
    run = resolve_embed_run(cfg.embed_run, cfg.paths.output_dir)
    if not (run.run_dir / ONNX_FILE).is_file() or not isinstance(run.meta.get("onnx"), dict):
        raise UserError(f"{run.run_dir} holds no {ONNX_FILE} (made with onnx=false, by an older landmark-ae, or over "
                        "the export's tolerance): re-run `landmark-ae embed` (onnx=true)")
    check_artifacts(run.run_dir, [ONNX_FILE], "re-run `landmark-ae embed`")
    out = Path(cfg.out).expanduser().resolve() if cfg.out else Path(run_dir)
    if cfg.out and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"out={cfg.out} exists and is not an empty folder: name a new folder")
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        files = write_bundle(run, tmp, enum_value(cfg.format))
        if out == Path(run_dir):  # Hydra's run dir holds its own files (.hydra/, export.log): move ours in
            for name in files:
                os.replace(tmp / name, out / name)
            tmp.rmdir()
        else:
            if out.is_dir():
                out.rmdir()
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"bundle": out, "files": len(files), "rows": len(run.ids)}
