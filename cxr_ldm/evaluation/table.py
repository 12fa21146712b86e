"""The printed summary of an evaluation: one line per metric, beside the published reference figures."""

from __future__ import annotations

from typing import Any

from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL

# Published figures of the reference model (DESIGN.md); its FID used another protocol (docs/evaluation.md).
REFERENCE = {
    "recon": "MS-SSIM 0.9789 (5,000 test images)",
    "diversity": "generated 0.4083 / real 0.4046",
    "fid": "9.02 (1,000 vs 1,000; other protocol, not comparable)",
}


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _line(name: str, m: dict[str, Any]) -> str:
    if name == "recon":
        return f"MS-SSIM {_fmt(m['ms_ssim'])}  PSNR {_fmt(m['psnr'], '.2f')} dB  (n={m['n']})"
    if name == "diversity":
        real = m.get("real") or {}
        return (f"pairwise MS-SSIM generated {_fmt(m['generated']['mean'])} / real {_fmt(real.get('mean'))}"
                f"  ({m['generated']['n_images']} images)")  # fmt: skip
    if name == "fid":
        text = f"{_fmt(m['value'], '.3f')}  ({m['n_real']} real vs {m['n_generated']} generated)"
        if "inception" in m:
            text += f"; Inception FID {_fmt(m['inception']['value'], '.3f')}"
        return text
    if name == "kid":
        spread = f"({m['subsets']} subsets of {m['subset_size']})"
        return f"{_fmt(m['mean'], '.5f')} +- {_fmt(m['std'], '.5f')}  {spread}"
    if name == "adherence":
        gen, real = m["generated"], m.get("real") or {}
        return (f"generated accuracy {_fmt(gen['mean_accuracy'], '.3f')} "
                f"AUROC {_fmt(gen['mean_auroc'], '.3f')}; "
                f"real AUROC {_fmt(real.get('mean_auroc'), '.3f')}")  # fmt: skip
    if name == "memorization":
        g, r = m["generated_to_train"]["quantiles"]["0.5"], m["real_test_to_train"]["quantiles"]["0.5"]
        return (f"near-copies {m['n_near_copies']}/{m['generated_to_train']['n']}; median NN distance "
                f"generated {g:.4f} vs real test {r:.4f}")  # fmt: skip
    return str(m)


def format_table(metrics: dict[str, Any], names: list[str]) -> str:
    """A fixed-width table: metric, value, published reference; random-weight features are flagged."""
    rows = [("metric", "value", "published reference")]
    for name in names:
        if name not in metrics:
            continue
        m = metrics[name]
        value = _line(name, m)
        if m.get("xrv_weights") == RANDOM_WEIGHTS_LABEL:
            value += "  [RANDOM xrv weights: plumbing only]"
        rows.append((name, value, REFERENCE.get(name, "")))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
