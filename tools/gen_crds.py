"""Write crds/*.yaml from the pydantic models (`make crds`); `--check` fails on drift."""

from __future__ import annotations

import sys
from pathlib import Path

from runnerfleet.builders.crds import ALL_KINDS, render_crd_yaml

CRDS = Path(__file__).resolve().parents[1] / "crds"


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for kind in ALL_KINDS:
        path = CRDS / f"{kind.plural}.runnerfleet.dev.yaml"
        text = render_crd_yaml(kind)
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(path))
        else:
            path.write_text(text)
            print(f"wrote {path}")
    if stale:
        print(f"CRDs out of date with the models: {', '.join(stale)}; run `make crds`")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
