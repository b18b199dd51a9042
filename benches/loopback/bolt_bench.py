#!/usr/bin/env python3
"""Bolt loopback benchmark: the same as `harness.py --mode bolt` (see README.md, "Bolt mode").

  python3 benches/loopback/bolt_bench.py --smoke
  python3 benches/loopback/bolt_bench.py --repeat 3 --sluice PATH --bolt-load PATH
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

if __name__ == "__main__":
    args = sys.argv[1:]
    if any(a == "--mode" or a.startswith("--mode=") for a in args):
        sys.exit("bolt_bench.py: --mode is fixed to bolt (use harness.py for the other modes)")
    sys.exit(harness.main(["--mode", "bolt", *args]))
