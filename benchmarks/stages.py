"""Where a search's minutes go: runs one search as a user would (a fresh decode cache unless ``--warm``) and prints the
whole command's seconds beside each stage's (``best.json``'s ``stages_s``; with ``--time-budget``, ``budget.json``'s
plan against what each stage took). Usage:

    .venv/bin/python benchmarks/stages.py ../shared/data/hymenoptera --backbones tf_efficientnet_lite0 \\
        --weights ../shared/weights --trials 8 --max-epochs 4 --no-retrain

Everything after the data folder goes to ``python -m search`` unchanged.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str]) -> None:
    warm = "--warm" in argv
    args = [a for a in argv if a != "--warm"]
    if not args:
        sys.exit(__doc__)
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ)
        if not warm:  # a first run: images decoded and features computed anew
            env["SEARCH_CACHE"] = str(Path(tmp, "cache"))
        out = Path(tmp, "out")
        command = [sys.executable, "-m", "search", *args, "--out", str(out), "--dashboard-port", "0"]
        started = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        whole = time.perf_counter() - started
        if done.returncode:
            sys.exit(f"the search failed ({done.returncode}):\n{done.stderr[-3000:]}")
        [best_file] = out.glob("*/best.json")
        best = json.loads(best_file.read_text())
        stages = best.get("stages_s", {})
        rest = whole - sum(stages.values())
        print(f"whole command {whole:.1f} s; outside these stages (imports, Ray, decoding, tables) {rest:.1f} s")
        for name, seconds in stages.items():
            print(f"  {name:10s} {seconds:7.1f} s")
        print(
            f"best val_acc {best['val_acc']:.3f} on {best['val_n']} photos ({best['config']['backbone']}, "
            f"freeze_depth {best['config']['freeze_depth']}); trials {best['trials']}"
        )
        budget = best_file.with_name("budget.json")
        if budget.is_file():
            print("budget.json:", json.dumps(json.loads(budget.read_text()), indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
