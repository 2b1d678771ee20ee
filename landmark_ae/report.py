"""`landmark-ae report run=<evaluate run | train run | sweep dir>`: one report.html in that dir, which
opens from disk with no server and works copied alone (every image inlined as a data: URI, the little
script and style inline).

    evaluate run  the metrics table (model, pixel baseline; the seed's Table 1 numbers where the model is
                  M1/M2/M3), a retrieval grid of the test (or val) queries with hits and misses marked,
                  embedding_map.png, per-class AP (table and figure), then the train run's loss curves and
                  reconstructions, the configs (what the command line changed from the defaults first),
                  and the lineage prepare -> train -> embed -> evaluate
    train run     its loss curves, reconstructions, metrics where it ran evaluate=true, config, lineage
    sweep dir     the `runs sweep=` table (click a heading to sort) and sweep.png (drawn if missing)

Runs are read through runs.Run; a file a run lacks is a section left out, never an error.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

from landmark_ae.errors import UserError
from landmark_ae.runs import Run, read_json_or_none, write_text_atomic

REPORT_FILE = "report.html"
# The seed study's Table 1 (20 epochs on its GLDv2 slice), as scripts/table1.py reports it.
SEED_TABLE1 = {
    "m1": {"best_val_loss": 0.054003, "nmi": 0.139366, "ri": 0.925350},
    "m2": {"best_val_loss": 0.040074, "nmi": 0.182436, "ri": 0.926809},
    "m3": {"best_val_loss": 0.024561, "nmi": 0.189234, "ri": 0.927001},
}
METRIC_COLUMNS = ["best_val_loss", "nmi", "ri", "ari", "ami", "map@{k}", "p@1", "p@10", "recall@{k}"]
GRID_QUERIES, GRID_K, GRID_SIDE = 8, 8, 72  # the retrieval grid: queries, neighbours, thumbnail pixels
FIGURES = {"loss_curve.png": "Loss curves", "reconstructions.png": "Reconstructions",
           "embedding_map.png": "Embedding map", "per_landmark_ap.png": "Per-class AP"}

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;color:#1d2228;margin:0 auto;max-width:1100px;padding:12px 24px}
h1{font-size:20px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #d9dde2}
table{border-collapse:collapse;margin:6px 0}th,td{padding:3px 9px;border-bottom:1px solid #e4e7eb;text-align:right}
th:first-child,td:first-child{text-align:left}th{background:#f3f4f6}th.sort{cursor:pointer}
tr.seed td{color:#69717b;font-style:italic}img.fig{max-width:100%}pre{background:#f6f7f9;padding:8px;overflow:auto}
.grid td{padding:2px}.grid img{width:72px;height:72px;border:3px solid #d9dde2;display:block}
.grid img.hit{border-color:#1a7f37}.grid img.miss{border-color:#cf222e}.grid img.query{border-color:#0969da}
.muted{color:#69717b}code{background:#f3f4f6;padding:0 3px}ol.lineage li{margin:2px 0}
"""
# A heading click sorts its table by that column (numbers numerically, empty cells last).
SORT_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  table.querySelectorAll("th").forEach(function (th, col) {
    th.classList.add("sort");
    th.addEventListener("click", function () {
      var body = table.tBodies[0], rows = Array.from(body.rows), up = th.dataset.dir !== "up";
      th.dataset.dir = up ? "up" : "down";
      function key(r) { var t = r.cells[col].textContent.trim(), n = parseFloat(t); return t === "" ? null : (isNaN(n) ? t : n); }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === null || y === null) return x === y ? 0 : (x === null ? 1 : -1);
        return (x < y ? -1 : x > y ? 1 : 0) * (up ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def data_uri(data: bytes, kind: str) -> str:
    return f"data:{kind};base64,{base64.b64encode(data).decode()}"


def figure(run_dir: Path, name: str) -> str:
    path = run_dir / name
    if not path.is_file():
        return ""
    title = FIGURES.get(name, name)
    return f'<h2>{esc(title)}</h2>\n<img class="fig" alt="{esc(name)}" src="{data_uri(path.read_bytes(), "image/png")}">'


def table(header: list[str], rows: list[list[Any]], sortable: bool = False, row_class: list[str] | None = None) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(f'<tr class="{esc((row_class or [""] * len(rows))[i])}">' + "".join(f"<td>{esc(fmt(c))}</td>" for c in row)
                   + "</tr>" for i, row in enumerate(rows))
    return f'<table class="{"sortable" if sortable else ""}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


# ---- what the runs say ------------------------------------------------------------------------


def lineage(run: Run) -> list[tuple[str, Run | Path]]:
    """prepare -> train -> embed -> evaluate, from each run's record (the runs this one came from)."""
    chain: list[tuple[str, Run | Path]] = [(run.command or "?", run)]
    current = run
    for key in ("embed_run", "train_run", "data_dir"):
        given = (current.record or {}).get(key)
        if given:
            parent = Run(given)
            chain.append((parent.command or key.removesuffix("_run").removesuffix("_dir"), parent))
            current = parent
    return list(reversed(chain))


def lineage_html(chain: list[tuple[str, Any]]) -> str:
    items = []
    for command, run in chain:
        status = run.status if run.path.is_dir() else "missing"
        items.append(f"<li><b>{esc(command)}</b> <code>{esc(run.path)}</code> <span class=muted>{esc(status)} "
                     f"{esc(run.started)}</span></li>")
    return "<h2>Lineage</h2>\n<ol class=lineage>" + "".join(items) + "</ol>"


def config_html(chain: list[tuple[str, Run]]) -> str:
    """Each run's command-line overrides (what it changed from the defaults), then its whole config."""
    import yaml

    parts = ["<h2>Config</h2>"]
    for command, run in chain:
        if not run.config:
            continue
        changed = ", ".join(f"<code>{esc(o)}</code>" for o in run.overrides) or "<span class=muted>none: all defaults</span>"
        parts.append(f"<p><b>{esc(command)}</b>: changed from the defaults: {changed}</p>")
        parts.append(f"<details><summary>{esc(command)}'s whole config</summary><pre>"
                     f"{esc(yaml.safe_dump(run.config, sort_keys=False))}</pre></details>")
    return "\n".join(parts)


def metrics_html(metrics: dict[str, Any], best_val_loss: Any) -> str:
    """The model and the pixel baseline, and the seed's published row for M1/M2/M3."""
    k = (metrics.get("settings") or {}).get("k", 100)
    columns = [c.format(k=k) for c in METRIC_COLUMNS]
    model = str(metrics.get("model"))
    rows, classes = [], []
    for name, scores in (metrics.get("results") or {}).items():
        values = {**scores, "best_val_loss": best_val_loss if name == model else None, **spread_cells(scores)}
        rows.append([name, scores.get("dim"), *(values.get(c) for c in columns)])
        classes.append("model" if name == model else "pixels")
    seed = SEED_TABLE1.get(model)
    if seed:
        rows.append([f"seed {model.upper()} (published)", "", *(seed.get(c) for c in columns)])
        classes.append("seed")
    settings = metrics.get("settings") or {}
    queries, n_seeds = settings.get("queries", "test"), int(settings.get("kmeans_seeds") or 1)
    over = f", NMI/RI/ARI/AMI: mean ± std over {n_seeds} k-means seeds" if n_seeds > 1 else ""
    note = (f"<p class=muted>Retrieval: {esc(queries)} queries; clustering: k-means with k = landmarks{over}. "
            + ("The seed row is the study's Table 1 (20 epochs on its GLDv2 slice).</p>" if seed else "</p>"))
    return "<h2>Metrics</h2>\n" + table(["embedding", "dim", *columns], rows, row_class=classes) + note


def spread_cells(scores: dict[str, Any]) -> dict[str, str]:
    """evaluate's clustering means as "mean ± std" cells where it ran k-means over several seeds."""
    if int(scores.get("kmeans_seeds") or 1) <= 1:
        return {}
    return {m: f"{fmt(scores[m])} ± {fmt(scores[f'{m}_std'])}" for m in ("nmi", "ri", "ari", "ami")
            if isinstance(scores.get(m), float) and isinstance(scores.get(f"{m}_std"), float)}


def per_class_html(metrics: dict[str, Any], run_dir: Path) -> str:
    per = metrics.get("per_landmark_ap") or []
    if not per:
        return ""
    rows = [[p.get("landmark_id"), p.get("name") or "", p.get("n_queries"), p.get("ap")] for p in per]
    return (figure(run_dir, "per_landmark_ap.png") or "<h2>Per-class AP</h2>") + "\n" + \
        table(["landmark_id", "name", "queries", "AP"], rows, sortable=True)


def thumb_uri(path: str) -> str:
    from PIL import Image, ImageOps

    from landmark_ae.data.images import ImageError
    from landmark_ae.retrieval.collection import read_image_file

    try:
        with Image.open(io.BytesIO(read_image_file(path))) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            image.thumbnail((GRID_SIDE, GRID_SIDE))
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=80)
    except (ImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return ""  # a database image gone or unreadable: an empty cell, not a failed report
    return data_uri(out.getvalue(), "image/jpeg")


def grid_html(embed_run: Path, queries: str) -> str:
    """The first GRID_QUERIES queries of the evaluated protocol and their top GRID_K, each neighbour
    framed green (same landmark) or red, from the stored embeddings as evaluate searched them."""
    from landmark_ae.retrieval.embed_run import EmbedRun
    from landmark_ae.retrieval.index import Index

    try:
        run = EmbedRun(embed_run)
        _, query_rows, database = run.protocol(queries if queries in ("val", "test") else "test")
        query_rows = query_rows[:GRID_QUERIES]
        if not len(query_rows):
            return ""
        database_rows = run.augment(database)
        index = run.expand(Index(database_rows), database_rows)
        _, positions = index.search(run.embeddings[query_rows].astype("float32"), min(GRID_K, len(database)))
    except (UserError, OSError, ValueError):
        return ""
    names = run.class_names
    lines = []
    for query, found in zip(query_rows, positions, strict=True):
        label = int(run.labels[query])
        cells = [f'<td><img class=query alt="query {esc(run.ids[query])}" title="{esc(names.get(label, label))}" '
                 f'src="{thumb_uri(run.paths[query])}"></td>']
        for pos in found[found >= 0]:
            row = int(database[pos])
            other = int(run.labels[row])
            cells.append(f'<td><img class={"hit" if other == label else "miss"} alt="{esc(run.ids[row])}" '
                         f'title="{esc(names.get(other, other))}" src="{thumb_uri(run.paths[row])}"></td>')
        lines.append("<tr>" + "".join(cells) + "</tr>")
    return ("<h2>Retrieval grid</h2>\n<p class=muted>Each row: a query (blue) and its nearest database images, "
            "green where the landmark is the same, red where not.</p>\n<table class=grid>" + "".join(lines) + "</table>")


# ---- the three kinds of report ----------------------------------------------------------------


def evaluate_sections(run: Run) -> tuple[str, list[str]]:
    metrics = read_json_or_none(run.path / "metrics.json") or {}
    chain = lineage(run)
    train = next((r for c, r in chain if c == "train"), None)
    best = (train.record or {}).get("best_val_loss") if train else None
    queries = (metrics.get("settings") or {}).get("queries", "test")
    embed_run = (run.record or {}).get("embed_run") or metrics.get("embed_run")
    sections = [metrics_html(metrics, best) if metrics else "<p>metrics.json is missing: the run did not finish.</p>",
                grid_html(Path(embed_run), queries) if embed_run else "", figure(run.path, "embedding_map.png"),
                per_class_html(metrics, run.path)]
    if train is not None:
        sections += [figure(train.path, "loss_curve.png"), figure(train.path, "reconstructions.png")]
    title = f"{metrics.get('model', '?')} on {metrics.get('data', '?')}: evaluation"
    return title, [*sections, config_html(chain), lineage_html(chain)]


def train_sections(run: Run) -> tuple[str, list[str]]:
    record = run.record or {}
    chain = lineage(run)
    sections = [f"<p>best validation loss <b>{esc(fmt(record.get('best_val_loss')))}</b> at epoch "
                f"{esc(record.get('best_epoch', '?'))}</p>"]
    metrics = read_json_or_none(run.path / "metrics.json")
    if isinstance(metrics, dict):  # train evaluate=true
        sections += [metrics_html(metrics, record.get("best_val_loss")), per_class_html(metrics, run.path)]
    sections += [figure(run.path, "loss_curve.png"), figure(run.path, "reconstructions.png"),
                 config_html(chain), lineage_html(chain)]
    return f"{record.get('model', '?')} on {record.get('data', '?')}: training", sections


def sweep_sections(sweep_dir: Path) -> tuple[str, list[str]]:
    from landmark_ae.run_list import find_runs, plot_sweep

    rows = find_runs(sweep_dir.parent.parent, None, str(sweep_dir))
    if not rows:
        raise UserError(f"run={sweep_dir}: holds no run.json and no sweep jobs: give an evaluate run, a train run or "
                        "a multirun sweep dir")
    if not (sweep_dir / "sweep.png").is_file():
        try:
            plot_sweep(rows, sweep_dir)
        except UserError:
            pass  # nothing varies, or nothing scored yet: the table alone
    columns = [c for c in rows[0] if any(row[c] for row in rows)]
    cells = [[Path(row[c]).name if c == "run_dir" else row[c] for c in columns] for row in rows]
    sections = ["<h2>Runs</h2>\n<p class=muted>`landmark-ae runs sweep=` as a table: click a heading to sort.</p>",
                table(columns, cells, sortable=True), figure(sweep_dir, "sweep.png").replace("<h2>sweep.png", "<h2>Sweep plot")]
    return f"sweep {sweep_dir.name}: {len(rows)} run(s)", sections


def render(title: str, sections: list[str], source: Path) -> str:
    body = "\n".join(s for s in sections if s)
    return (f"<!doctype html>\n<html lang=en><head><meta charset=utf-8><title>{esc(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{esc(title)}</h1>\n<p class=muted>landmark-ae report of "
            f"<code>{esc(source)}</code></p>\n{body}\n<script>{SORT_SCRIPT}</script>\n</body></html>\n")


def write_report(path: Path | str) -> Path:
    """<path>/report.html for an evaluate run, a train run or a sweep dir; returns its path."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"run={path} does not exist: give an evaluate run, a train run or a sweep dir")
    run = Run(path)
    if run.damaged:
        raise UserError(f"{path / 'run.json'} is damaged ({run.problem}): nothing to report")
    if run.command == "evaluate":
        title, sections = evaluate_sections(run)
    elif run.command == "train":
        title, sections = train_sections(run)
    elif run.record is None:
        title, sections = sweep_sections(path)
    else:
        raise UserError(f"run={path} is a run of `{run.command}`: give an evaluate run, a train run or a sweep dir")
    out = path / REPORT_FILE
    write_text_atomic(out, render(title, sections, path.resolve()))
    return out


def write_report_quietly(run_dir: Path) -> dict[str, Path]:
    """evaluate's hook: {"report": <path>}, or {} with one warning where the report cannot be written
    (the evaluation itself is complete and kept either way)."""
    import logging

    try:
        return {"report": write_report(run_dir)}
    except (UserError, OSError, ValueError) as exc:
        logging.getLogger(__name__).warning("report.html not written: %s", exc)
        return {}


__all__ = ["REPORT_FILE", "SEED_TABLE1", "write_report", "write_report_quietly"]
