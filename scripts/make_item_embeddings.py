"""Generate the shipped item embeddings (docs/method.md section 1) and their fingerprints.

    python scripts/make_item_embeddings.py            # writes gym_slaterec/data/
    python scripts/make_item_embeddings.py --check    # verifies the shipped files
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from gym_slaterec.core.embeddings import RECIPE_POWER, SHIPPED_SEEDS, fingerprint, generate_item_embeddings

DATA = Path(__file__).resolve().parents[1] / "gym_slaterec" / "data"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="regenerate in memory and compare with the shipped files")
    args = parser.parse_args()
    meta = {}
    for kind, seed in SHIPPED_SEEDS.items():
        emb = generate_item_embeddings(kind, seed)
        meta[kind] = {
            "seed": seed,
            "shape": list(emb.shape),
            "power": RECIPE_POWER[kind],
            "sha256": fingerprint(emb),
        }
        path = DATA / f"item_embeddings_{kind}.npy"
        if args.check:
            if not np.array_equal(np.load(path), emb):
                print(f"MISMATCH: {path}", file=sys.stderr)
                return 1
            print(f"ok {kind} {meta[kind]['sha256'][:16]}")
        else:
            DATA.mkdir(parents=True, exist_ok=True)
            np.save(path, emb)
            print(f"wrote {path} sha256={meta[kind]['sha256'][:16]}")
    if not args.check:
        (DATA / "item_embeddings.json").write_text(json.dumps(meta, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
