"""Running `landmark-ae serve`: load the embed run once (into memory), listen, print the url, drain on
stop.

SIGTERM and SIGINT stop accepting connections, let the requests in flight finish (up to drain_s; a
second signal cuts the wait short), and end the command with exit code 0. Its run is recorded
complete when every request was answered, else interrupted, naming how many were cut off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

from aiohttp import web
from omegaconf import DictConfig

from landmark_ae.errors import UserError
from landmark_ae.runs import write_run_record
from landmark_ae.serve import TOKEN_ENV
from landmark_ae.serve.app import STATE, is_loopback, make_app
from landmark_ae.serve.loading import load_served_run

log = logging.getLogger("landmark_ae.serve")
SETTLE_S = 0.25  # after the last request ends, how long the drain waits for requests already on the wire
__all__ = ["is_loopback", "run_serve", "serve_until_stopped"]


async def drain(app: web.Application, site: web.BaseSite, drain_s: float, cut_short: asyncio.Event) -> int:
    """Stop listening, then wait until no request has been in flight for SETTLE_S (at most drain_s);
    returns how many requests are still in flight."""
    state = app[STATE]
    state.stopping = True
    await site.stop()
    loop = asyncio.get_running_loop()
    deadline, quiet_since = loop.time() + drain_s, None
    while loop.time() < deadline and not cut_short.is_set():
        if state.inflight:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = loop.time()
        elif loop.time() - quiet_since >= SETTLE_S:
            break
        await asyncio.sleep(0.02)
    return state.inflight


async def serve_until_stopped(app: web.Application, host: str, port: int, drain_s: float) -> tuple[str, int]:
    """Listen on host:port, print `url<TAB>...` on stdout, serve until SIGTERM/SIGINT, drain; returns the
    url and how many requests the drain cut off."""
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}: choose another port "
                            "(port=0 picks a free one) or host") from None
        bound = runner.addresses[0]
        shown = f"[{bound[0]}]" if ":" in str(bound[0]) else bound[0]
        url = f"http://{shown}:{bound[1]}"
        print(f"url\t{url}", flush=True)
        log.info("serving on %s (SIGTERM or Ctrl-C stops)", url)
        signals = (asyncio.Event(), asyncio.Event())  # the first stops, the second cuts the drain short
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: (signals[1] if signals[0].is_set() else signals[0]).set())
        await signals[0].wait()
        log.info("stopping: no new connections; finishing the %d request(s) in flight (up to drain_s=%g s)",
                 app[STATE].inflight, drain_s)
        return url, await drain(app, site, drain_s, signals[1])
    finally:
        await runner.cleanup()


def check_device(name: str) -> None:
    """Refuse at start a device the model cannot run on here (meta holds no data; mps off a Mac)."""
    import torch

    from landmark_ae.device import pick_device

    try:
        torch.ones(1, device=pick_device(name)).add(1).cpu()
    except (RuntimeError, NotImplementedError) as exc:
        raise UserError(f"device={name} cannot run the model here ({str(exc).splitlines()[0][:80]}): "
                        "use device=cpu, auto or cuda") from None


def settings_of(cfg: DictConfig) -> dict[str, Any]:
    return {"k": cfg.k, "max_k": cfg.max_k, "max_batch": cfg.max_batch, "max_wait_ms": cfg.max_wait_ms,
            "max_queue": cfg.max_queue, "max_body": int(cfg.max_body_mb * 2**20),
            "max_inflight": int(cfg.max_inflight_mb * 2**20), "max_pixels": cfg.max_pixels, "timeout_s": cfg.timeout_s}


def run_serve(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    token = cfg.token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(cfg.host) and not token:
        raise UserError(f"host={cfg.host} lets other machines in: set token=<secret> (or {TOKEN_ENV}) so that every "
                        "request must carry `Authorization: Bearer <secret>`, or keep host=127.0.0.1")
    from landmark_ae.retrieval.retriever import Retriever, choose_runtime

    run = load_served_run(cfg.embed_run, cfg.paths.output_dir)
    runtime = choose_runtime(run, cfg.runtime, cfg.device, cfg.checkpoint)  # onnx: torch is never imported
    if runtime == "torch":
        if cfg.threads:
            import torch

            torch.set_num_threads(cfg.threads)
        check_device(cfg.device)
    retriever = Retriever(run, cfg.checkpoint, cfg.device, cfg.batch_size, runtime=runtime, threads=cfg.threads)
    log.info("queries embedded on %s", "ONNX Runtime (encoder.onnx)" if runtime == "onnx" else "torch")
    app = make_app(retriever, settings_of(cfg), token)
    lineage = {"embed_run": str(run.run_dir), "model": run.meta["model"]}
    write_run_record(run_dir, "serve", "running", **lineage)
    url, cut_off = asyncio.run(serve_until_stopped(app, cfg.host, cfg.port, cfg.drain_s))
    if cut_off:
        message = f"stopped with {cut_off} request(s) unanswered after drain_s={cfg.drain_s:g} s"
        log.warning("%s", message)
        write_run_record(run_dir, "serve", "interrupted", **lineage, url=url, error=message)
    else:
        write_run_record(run_dir, "serve", "complete", **lineage, url=url)
    return {"run_dir": run_dir}
