"""The printed summary of an evaluation: one line per measure, beside the published reference figures."""

from __future__ import annotations

from typing import Any

from cxr_ldm.metrics.features import RANDOM_WEIGHTS_LABEL

# Published figures of the reference model (DESIGN.md); its FID used another protocol (docs/evaluation.md).
REFERENCE = {
    "recon": "MS-SSIM 0.9789 (5,000 test images)",
    "diversity": "generated 0.4083 / real 0.4046",
    "fid": "9.02 (1,000 vs 1,000; other protocol, not comparable)",
    "fid_raddino": "CheXGenBench: 54.23 (Sana) .. 186.53 (SD V2-1)",
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
    if name == "fid_raddino":
        return f"{_fmt(m['value'], '.3f')}  ({m['n_real']} real vs {m['n_generated']} generated)"
    if name == "kid_raddino":
        return f"{_fmt(m['mean'], '.5f')} +- {_fmt(m['std'], '.5f')}  ({m['subsets']} subsets of {m['subset_size']})"
    if name == "prdc":
        sets = [(k, v) for k, v in m.items() if isinstance(v, dict) and "precision" in v]
        return "; ".join(f"{k}: P {_fmt(v['precision'], '.3f')} R {_fmt(v['recall'], '.3f')} "
                         f"D {_fmt(v['density'], '.3f')} C {_fmt(v['coverage'], '.3f')}" for k, v in sets)  # fmt: skip
    if name == "alignment":
        return f"mean {_fmt(m['mean'])} +- {_fmt(m['std'])}  (n={m['n']})"
    if name == "reid":
        real = (m.get("real_test_to_train") or {}).get("mean")
        return (f"mean {_fmt(m['mean'], '.3f')} max {_fmt(m['max'], '.3f')}, "
                f"{m['n_above_threshold']}/{m['n_generated']} above {m['threshold']:g}; "
                f"real test mean {_fmt(real, '.3f')}")  # fmt: skip
    if name == "per_pathology":
        labels = m["labels"].values()
        with_fid = [e for e in labels if e.get("fid") is not None]
        rates = [e["adherence"]["generated"]["rate"] for e in labels
                 if e.get("adherence") and e["adherence"]["generated"]["rate"] is not None]  # fmt: skip
        mean_rate = sum(rates) / len(rates) if rates else None
        return (f"FID for {len(with_fid)}/{len(m['labels'])} labels; mean positive rate on generated "
                f"{_fmt(mean_rate, '.3f')} ({len(rates)} labels)")  # fmt: skip
    return str(m)


def _random_weights(m: dict[str, Any]) -> str:
    """The flag of a result made with random weights (DenseNet, or any network's protocol)."""
    if m.get("xrv_weights") == RANDOM_WEIGHTS_LABEL:
        return "  [RANDOM xrv weights: plumbing only]"
    def random(protocol: Any) -> bool:
        return isinstance(protocol, dict) and protocol.get("weights") == RANDOM_WEIGHTS_LABEL

    if random(m.get("protocol")):
        return "  [RANDOM weights: plumbing only]"
    parts = [k for k, v in m.items() if isinstance(v, dict) and random(v.get("protocol"))]  # e.g. prdc's sets
    return f"  [RANDOM weights ({', '.join(parts)}): plumbing only]" if parts else ""


def format_table(metrics: dict[str, Any], names: list[str]) -> str:
    """A fixed-width table: metric, value, published reference; random-weight features are flagged."""
    rows = [("metric", "value", "published reference")]
    for name in names:
        if name not in metrics:
            continue
        m = metrics[name]
        value = _line(name, m) + _random_weights(m)
        rows.append((name, value, REFERENCE.get(name, "")))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
