"""``anydepth info``: every known model, its license, and whether it is present locally."""

from __future__ import annotations

import argparse

from ..catalog import DEFAULT_MODEL, VARIANTS


def add_parser(sub: argparse._SubParsersAction) -> None:
    i = sub.add_parser("info", help="list every known model with its license and whether it is present locally")
    i.add_argument("--models-dir", default=None, help="folder to check (default ANYDEPTH_MODELS or ~/.cache/anydepth/models)")
    i.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..weights import find_local, model_dirs

    dirs = model_dirs(args.models_dir)
    rows = [("name", "family", "encoder", "output", "license", "local", "hub repo / file")]
    for v in VARIANTS.values():
        if v.family == "da3":
            output = ("metres + cameras" if "nested" in v.name else "metres (× focal) + sky" if v.kind == "metric_depth"
                      else "depth + cameras" if v.name.startswith("da3-") else "depth + sky")
        else:
            output = "relative" if v.kind == "disparity" else f"metres ≤ {v.max_depth:g}" if v.max_depth else "metres"
            output += " (video)" if v.family == "vda" else ""
        local = "—" if v.repo_id is None else ("yes" if find_local(v, dirs) else "no")
        where = v.notes if v.repo_id is None else f"{v.repo_id} / {', '.join(v.files)}"
        license = v.license + (" *" if v.license_note else "")  # * : sources disagree, see the notes below
        rows.append((v.name, v.family, v.encoder, output, license, local, where))
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1])
    notes: dict[str, list[str]] = {}  # one line per note, naming every variant it concerns
    for v in VARIANTS.values():
        if v.license_note:
            notes.setdefault(v.license_note, []).append(v.name)
    if notes:
        print("\n* license notes (the cautious license is shown):")
        for note, names in notes.items():
            print(f"  {', '.join(names)}: {note}")
    print(f"\nmodels folder: {', '.join(str(d) for d in dirs)}  (default model: {DEFAULT_MODEL})")
    return 0
