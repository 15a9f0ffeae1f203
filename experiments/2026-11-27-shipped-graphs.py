"""Cold start of a torch_compiled bundle with and without its shipped graphs (experiments/2026-11-27-shipped-graphs.md).

Each load runs in a fresh process over an empty inductor cache of its own, as a new deployment's first load
would: `autoopt.bundle.load_bundle` on the bundle, and on a copy of it without `model/inductor_cache`, arms
alternated for ROUNDS rounds. Printed per load: the wall time of `load_bundle` (weights, quantization, compiling
or reading the graphs, first run of each graph), the part of it spent on graphs (`compile_seconds`), the inductor
cache's hits and misses, and the first request's greedy tokens (which must agree between arms).

    HF_HUB_OFFLINE=1 PYTHONPATH=$PWD .venv/bin/python experiments/2026-11-27-shipped-graphs.py BUNDLE [ROUNDS]
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = """
import json, sys, time
t = time.perf_counter()
from autoopt.bundle.load import load_bundle
b = load_bundle(sys.argv[1])
wall = time.perf_counter() - t
tokens = b.generate_text("def ", max_new_tokens=16)
e = b.engine
print(json.dumps({"wall_s": wall, "compile_s": e.compile_seconds(), "cache": e.compile_cache, "text": tokens}))
"""

bundle = Path(sys.argv[1])
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
with tempfile.TemporaryDirectory(prefix="autoopt_shipped_ab_") as work:
    bare = Path(work) / "bare"
    shutil.copytree(bundle, bare, ignore=shutil.ignore_patterns("inductor_cache"))
    arms = {"shipped": bundle, "compiled at load": bare}
    seen: dict[str, list[dict]] = {arm: [] for arm in arms}
    for r in range(rounds):
        for arm in arms if r % 2 == 0 else reversed(list(arms)):
            cache = Path(work) / f"cache-{r}-{arm.replace(' ', '_')}"
            env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(cache)}
            out = subprocess.run([sys.executable, "-c", _CHILD, str(arms[arm])], env=env, capture_output=True,
                                 text=True, check=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            seen[arm].append(row)
            c = row["cache"]
            print(f"round {r} {arm}: load {row['wall_s']:.1f} s, graphs {row['compile_s']:.1f} s, "
                  f"inductor cache hits {c['hits']} misses {c['misses']}", flush=True)
    texts = {row["text"] for rows in seen.values() for row in rows}
    print("first request's text identical in every load:", len(texts) == 1)
    for arm, rows in seen.items():
        print(f"{arm}: load median {statistics.median(r['wall_s'] for r in rows):.1f} s "
              f"(range {min(r['wall_s'] for r in rows):.1f}-{max(r['wall_s'] for r in rows):.1f}), "
              f"graphs median {statistics.median(r['compile_s'] for r in rows):.1f} s, {len(rows)} loads")
