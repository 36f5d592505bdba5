"""The policy language: schema, loader, matcher, decisions, and the review tools."""

from pathlib import Path

# Policies packaged with sandgate (the deny-all `default` and the examples): read-only
# defaults a policy store falls back to for a name it does not hold.
PACKAGED_DIRS: tuple[Path, ...] = (Path(__file__).resolve().parent,
                                   Path(__file__).resolve().parent / "examples")
