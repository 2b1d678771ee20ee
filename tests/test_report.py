"""`landmark-ae report` (landmark_ae/report.py): report.html of an evaluate run, a train run and a sweep,
opened from disk in a real headless Chromium (tests/browser.py): it shows the mAP evaluate printed,
every image is inlined and loads with no request off the file, a copy alone still works, a sweep's
table sorts. One browser for the module."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest
from browser import broken_images, chromium, watch
from conftest import one_line_error, results, run_cli, run_in_process
from test_run_list import fake_sweep


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from chromium()


def open_report(browser: Any, path: Path) -> tuple[Any, list[str], list[str]]:
    """The page of report.html at `path`, what reached its console, and every URL it asked for."""
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems, requested = watch(page), []
    page.on("request", lambda r: requested.append(r.url))
    page.goto(path.resolve().as_uri())
    return page, problems, requested


def test_the_report_of_an_evaluate_run_shows_the_map_evaluate_printed_and_works_copied_alone(
        browser, tiny_embedded, tmp_path):
    out = run_in_process("evaluate", f"embed_run={tiny_embedded}", "n_init=1", run_dir=tmp_path / "evaluate")
    report = Path(out["report"])  # evaluate writes it beside metrics.json
    assert report == tmp_path / "evaluate" / "report.html"
    alone = tmp_path / "elsewhere" / "copy.html"
    alone.parent.mkdir()
    shutil.copy(report, alone)
    page, problems, requested = open_report(browser, alone)
    model_row = page.locator("tr.model").inner_text()
    assert "m1" in model_row and f"{float(out['model.map@100']):.4f}" in model_row
    assert f"{float(out['pixels.map@100']):.4f}" in page.locator("tr.pixels").inner_text()
    assert "seed M1 (published)" in page.locator("tr.seed").inner_text()  # the seed's Table 1 row
    assert "0.1394" in page.locator("tr.seed").inner_text()  # its NMI
    headings = page.locator("h2").all_inner_texts()
    for section in ("Metrics", "Retrieval grid", "Embedding map", "Per-class AP", "Loss curves", "Reconstructions",
                    "Config", "Lineage"):
        assert section in headings, headings
    assert [li.split(" ")[0] for li in page.locator("ol.lineage li").all_inner_texts()] == [
        "prepare", "train", "embed", "evaluate"]
    assert page.locator(".grid img.hit, .grid img.miss").count() == 6 * 8  # 6 test queries, top 8 each
    assert broken_images(page) == [] and page.evaluate("document.images.length") > 50
    assert problems == [] and all(u.startswith(("file:", "data:")) for u in requested), requested
    page.close()


def test_report_cli_of_a_train_run_and_a_sweep_whose_table_sorts(browser, tiny_trained, tmp_path):
    train = shutil.copytree(tiny_trained, tmp_path / "train")  # the shared run stays as it was
    proc = run_cli("report", f"run={train}", outputs=tmp_path / "outputs")
    assert proc.returncode == 0, proc.stderr
    assert results(proc) == {"report": str(train / "report.html")} and not (tmp_path / "outputs").exists()
    page, problems, _ = open_report(browser, train / "report.html")
    assert {"Loss curves", "Reconstructions", "Lineage"} <= set(page.locator("h2").all_inner_texts())
    assert broken_images(page) == [] and problems == []
    page.close()

    sweep = fake_sweep(tmp_path / "sweep_outputs")
    from landmark_ae.report import write_report

    page, problems, _ = open_report(browser, write_report(sweep))
    assert (sweep / "sweep.png").is_file() and "Sweep plot" in page.locator("h2").all_inner_texts()
    column = page.locator("table.sortable th").all_inner_texts().index("best_val_loss")
    cells = f"table.sortable tbody tr td:nth-child({column + 1})"
    page.locator("table.sortable th").nth(column).click()
    assert page.locator(cells).all_inner_texts() == ["0.050000", "0.100000", "0.200000", "0.300000"]
    page.locator("table.sortable th").nth(column).click()
    assert page.locator(cells).all_inner_texts() == ["0.300000", "0.200000", "0.100000", "0.050000"]
    assert problems == []
    page.close()


def test_report_refuses_what_it_cannot_report_in_one_line(tiny_embedded, tmp_path):
    from landmark_ae.errors import UserError
    from landmark_ae.report import write_report

    with pytest.raises(UserError, match="is a run of `embed`: give an evaluate run, a train run or a sweep dir"):
        write_report(tiny_embedded)
    with pytest.raises(UserError, match="holds no run.json and no sweep jobs"):
        write_report(tmp_path)
    one_line_error(run_cli("report", f"run={tmp_path / 'nope'}", outputs=tmp_path / "outputs"), "does not exist")
