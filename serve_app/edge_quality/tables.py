"""The edge benchmark's per-size table: each method's means over the photos of one size (1, 2, 4, 8, 12 MP),
against plain upsampling with the photo's own colours, and how many photos got worse than plain."""

from __future__ import annotations

import math

import numpy as np

GROUPS = (1, 2, 4, 8, 12)  # megapixels
MEASURES = ("sad", "composite_band", "composite_image", "gradient")
WORSE_BY = 0.02  # the bar: no photo worse than plain by more than 2% on SAD or band composite


def group_of(megapixels: float) -> int:
    return min(GROUPS, key=lambda g: abs(math.log(megapixels / g)))


def size_groups(megapixels: list[float]) -> dict[int, list[int]]:
    """{size in MP: indices of the photos of that size}, in GROUPS order, the sizes present only."""
    groups = {group: [i for i, mp in enumerate(megapixels) if group_of(mp) == group] for group in GROUPS}
    return {group: index for group, index in groups.items() if index}


def seconds_per_mp(rows: list[dict], megapixels: float) -> dict:
    """Wall and CPU seconds per megapixel of photos timed in ``ms`` and ``cpu_ms``."""
    return {"s_per_mp": round(sum(r["ms"] for r in rows) / 1000 / megapixels, 3),
            "cpu_s_per_mp": round(sum(r["cpu_ms"] for r in rows) / 1000 / megapixels, 3)}


def _row(rows: list[dict], base: list[dict], megapixels: float) -> dict:
    row = {key: round(float(np.mean([r[key] for r in rows])), 4) for key in MEASURES}
    for key in MEASURES:
        row[f"{key}_vs_plain"] = round(row[key] / max(float(np.mean([b[key] for b in base])), 1e-12) - 1.0, 4) + 0.0
    for key in ("sad", "composite_band"):
        row[f"{key}_worse"] = sum(r[key] > b[key] for r, b in zip(rows, base))
        row[f"{key}_worse_by_2pc"] = sum(r[key] > (1 + WORSE_BY) * b[key] for r, b in zip(rows, base))
    row["worst_sad_vs_plain"] = round(max(r["sad"] / max(b["sad"], 1e-12) - 1 for r, b in zip(rows, base)), 4)
    row["worst_composite_band_vs_plain"] = round(max(r["composite_band"] / max(b["composite_band"], 1e-12) - 1
                                                     for r, b in zip(rows, base)), 4)
    if all(r.get("ms") is not None for r in rows):
        row.update(seconds_per_mp(rows, megapixels))
    return row


def by_size(samples, per_photo: dict[str, list[dict]]) -> dict:
    """{size in MP: {"photos", "backgrounds", method: row}} over the sizes present."""
    table = {}
    for group, index in size_groups([s.megapixels for s in samples]).items():
        megapixels = sum(samples[i].megapixels for i in index)
        entry = {"photos": len(index), "backgrounds": sorted({samples[i].background_kind for i in index})}
        for name, rows in per_photo.items():
            entry[name] = _row([rows[i] for i in index], [per_photo["plain"][i] for i in index], megapixels)
        table[str(group)] = entry
    return table


def markdown(half: dict, guard_label: str = "guard fallbacks") -> str:
    """The README's table for one half: per size, plain + colours and refined + colours against plain."""
    lines = ["| size | photos | method | SAD | vs plain | composite, edge band | vs plain | composite, photo | "
             "vs plain | gradient | vs plain | worse than plain (SAD / band; by > 2%) | s per MP |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    fired = {}
    for g in half.get("guard", {}).get("per_photo", []):
        fired[g["seed"]] = bool(g["fired"])
    for size, entry in half["sizes"].items():
        for name in ("plain", "plain_colours", "refined_colours"):
            if name not in entry:
                continue
            r = entry[name]
            worse = "" if name == "plain" else (f"{r['sad_worse']} / {r['composite_band_worse']}; "
                                                f"{r['sad_worse_by_2pc']} / {r['composite_band_worse_by_2pc']}")
            pct = {k: "" if name == "plain" else f"{100 * r[f'{k}_vs_plain']:+.1f}%" for k in MEASURES}
            lines.append(f"| {size} MP | {entry['photos']} | {name} | {r['sad']:.2f} | {pct['sad']} | "
                         f"{r['composite_band']:.2f} | {pct['composite_band']} | {r['composite_image']:.3f} | "
                         f"{pct['composite_image']} | {r['gradient']:.2f} | {pct['gradient']} | {worse} | "
                         f"{r.get('cpu_s_per_mp', '')} |")
    lines.append(f"\n{guard_label}: {sum(fired.values())} of {len(fired)} photos")
    return "\n".join(lines)
