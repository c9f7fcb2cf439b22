"""What every docs generator does with its output: write it, or check it is current."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def read(path: Path) -> str | None:
    return path.read_text(encoding="utf-8") if path.exists() else None


def run(
    description: str, outputs: Callable[[], dict[Path, str]], argv: list[str] | None = None
) -> int:
    """`script` rewrites the files; `script --check` exits 1 when any is stale."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help="fail if the docs are stale")
    args = parser.parse_args(argv)
    results = outputs()
    stale = [path for path, text in results.items() if read(path) != text]
    if args.check:
        script = Path(sys.argv[0]).name
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale; run scripts/{script}", file=sys.stderr)
        return 1 if stale else 0
    for path, text in results.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return 0
