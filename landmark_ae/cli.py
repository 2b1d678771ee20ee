"""`landmark-ae <command> [hydra overrides]`: strips the command and hands the rest to its @hydra.main.

Kept free of heavy imports so `landmark-ae --help` answers at once.
"""

from __future__ import annotations

import difflib
import importlib
import sys

from landmark_ae.output import StdoutClosed, guard_stdout

# name -> (module with a @hydra.main `main`, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("landmark_ae.commands.prepare", "sample a GLDv2 train.csv, split train/val/test, fetch and resize the images"),
    "train": ("landmark_ae.commands.train", "train an autoencoder (M1, M2, M3, ...) on a prepared dataset"),
    "embed": ("landmark_ae.commands.embed", "compute bottleneck embeddings of every prepared image with a trained model"),
    "evaluate": ("landmark_ae.commands.evaluate", "score an embed run: NMI, RI, ARI, AMI, mAP@100, P@k, vs a raw-pixel baseline"),
    "query": ("landmark_ae.commands.query", "rank the database images nearest to query images (TSV on stdout)"),
    "serve": ("landmark_ae.commands.serve", "answer image queries over HTTP from one embed run, loaded once"),
    "export": ("landmark_ae.commands.export", "bundle an embed run: encoder.onnx, preprocessing, post-processing, Parquet rows"),
    "runs": ("landmark_ae.commands.runs", "list runs with their status, settings and results (TSV on stdout)"),
    "report": ("landmark_ae.commands.report", "write report.html of an evaluate run, a train run or a sweep (opens from disk)"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [
        "usage: landmark-ae <command> [key=value ...] [hydra flags: --help, --cfg job, -m, ...]",
        "",
        "commands:",
        *(f"  {name.ljust(width)}  {text}" for name, (_, text) in COMMANDS.items()),
        "",
        "`landmark-ae <command> --help` shows that command's config and overrides.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code. A reader of stdout that stops early (`landmark-ae query ... |
    head -1`, `landmark-ae runs | head -1`) is not an error to report: exit 141 (128 + SIGPIPE) with no
    message, as coreutils end; stdout then points at /dev/null (landmark_ae.output)."""
    guard_stdout()
    try:
        try:
            return _dispatch(sys.argv[1:] if argv is None else list(argv))
        finally:
            sys.stdout.flush()  # here, not in Python's flush at exit, where a closed pipe is a traceback
    except StdoutClosed:
        return 141


def _dispatch(args: list[str]) -> int:
    if not args:
        print(usage(), file=sys.stderr)
        return 2
    if args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] == "--version":
        from importlib.metadata import version

        print(f"landmark-ae {version('landmark-ae')}")
        return 0
    name = args[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"landmark-ae: unknown command {name!r}{hint}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    # Hydra reads its overrides and flags from sys.argv.
    sys.argv = [f"{sys.argv[0]}", *args[1:]]
    module.main()
    return 0

if __name__ == "__main__":
    sys.exit(main())
