"""Which attention kernel the reference UNet's heads get, and what more, narrower heads would gain.

The reference UNet attends with one head of 512 channels (32 x 32 latent tokens at 512 px) and one of 768
(16 x 16 tokens), self-attention and cross-attention to 77 text tokens; flash attention takes heads of at most
256 channels. For each shape this times forward + backward of ``F.scaled_dot_product_attention`` under each
backend alone (flash, memory-efficient, cuDNN, math; "n/a" where the backend refuses the shape), the default
dispatch (and, from the profiler, the kernels it launched), MONAI's explicit attention (einsum + softmax, what
``use_flash_attention=false`` runs) and the same width split into heads of 64 channels.

    python benchmarks/attention.py --device cuda --dtype bf16 --batch 12
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# (name, query tokens, key tokens, width): the reference UNet at 512 px (latent 64 x 64)
SHAPES = [
    ("level 1 self (32x32 tokens, 512 wide)", 1024, 1024, 512),
    ("level 1 cross (to 77 text tokens)", 1024, 77, 512),
    ("level 2 self (16x16 tokens, 768 wide)", 256, 256, 768),
    ("level 2 cross (to 77 text tokens)", 256, 77, 768),
]
BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION, "math": SDPBackend.MATH}  # fmt: skip


def explicit(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """MONAI SABlock/CrossAttentionBlock without SDPA: einsum, scale, softmax, einsum."""
    att = torch.einsum("blxd,blyd->blxy", q, k) * q.shape[-1] ** -0.5
    return torch.einsum("bhxy,bhyd->bhxd", att.softmax(dim=-1), v)


def timed(fn, q, k, v, repeats: int, device: torch.device) -> float:
    """Milliseconds per forward + backward, after two warm-up calls."""
    for _ in range(2):
        fn(q, k, v).sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        fn(q, k, v).sum().backward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return 1000 * (time.perf_counter() - start) / repeats


def tensors(batch: int, heads: int, nq: int, nk: int, width: int, dtype: torch.dtype, device: torch.device):
    d = width // heads
    make = lambda n: torch.randn(batch, heads, n, d, device=device, dtype=dtype, requires_grad=True)  # noqa: E731
    return make(nq), make(nk), make(nk)


def default_kernels(q, k, v, device: torch.device) -> list[str]:
    """Names of the device kernels the default SDPA dispatch launched (forward + backward)."""
    if device.type != "cuda":
        return []
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        F.scaled_dot_product_attention(q, k, v).sum().backward()
        torch.cuda.synchronize(device)
    names = {e.key for e in prof.key_averages() if any(s in e.key.lower() for s in ("flash", "fmha", "attention", "cudnn", "efficient", "softmax"))}
    return sorted(names)[:6]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--scale", type=int, default=1, help="divide token counts and widths (quick CPU runs)")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    results = []
    for name, nq, nk, width in SHAPES:
        nq, width = nq // args.scale, width // args.scale
        nk = nk if nk == 77 else nk // args.scale
        row: dict = {"shape": name, "tokens": [nq, nk], "width": width}
        q, k, v = tensors(args.batch, 1, nq, nk, width, dtype, device)
        for backend_name, backend in BACKENDS.items():
            try:
                with sdpa_kernel([backend]):
                    row[backend_name] = timed(F.scaled_dot_product_attention, q, k, v, args.repeats, device)
            except RuntimeError as error:
                row[backend_name] = None
                row.setdefault("refused", {})[backend_name] = str(error).splitlines()[0][:120]
        row["default"] = timed(F.scaled_dot_product_attention, q, k, v, args.repeats, device)
        row["default_kernels"] = default_kernels(q, k, v, device)
        row["explicit"] = timed(explicit, q, k, v, args.repeats, device)
        heads = max(1, width // 64)
        q8, k8, v8 = tensors(args.batch, heads, nq, nk, width, dtype, device)
        row[f"default, {heads} heads of 64"] = timed(F.scaled_dot_product_attention, q8, k8, v8, args.repeats, device)
        results.append(row)

    columns = [*BACKENDS, "default", "explicit"]
    print(f"device={device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}) dtype={args.dtype} "
          f"batch={args.batch} torch={torch.__version__}; ms per forward+backward, one head of the full width")  # fmt: skip
    print("| shape | " + " | ".join(columns) + " | default, heads of 64 | default launches |")
    print("| --- |" + " --- |" * (len(columns) + 2))
    for row in results:
        cells = ["n/a" if row[c] is None else f"{row[c]:.3f}" for c in columns]
        many = next(v for key, v in row.items() if key.startswith("default, "))
        kernels = ", ".join(row["default_kernels"]) or "-"
        print(f"| {row['shape']} | " + " | ".join(cells) + f" | {many:.3f} | {kernels} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"args": vars(args) | {"json": str(args.json)}, "rows": results}, indent=2))


if __name__ == "__main__":
    main()
