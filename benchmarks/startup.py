"""What a learner's first optimizer steps cost at start: torch.optim.Adam against the learner's Adam.

    python -m benchmarks.startup [--repeats 3]

torch wraps Adam's step, zero_grad, add_param_group and (load_)state_dict in decorators for
torch.compile that import torch._dynamo on their first call. Each variant runs in a fresh
process (the import happens once per process), alternating, each timing `import torch` and then
20 steps of a small MLP with zero_grad, state_dict and load_state_dict, in CPU seconds. Prints
the median of each and their ratio; the last line is `adam start ratio: X` (torch's / ours).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

_PROBE = """
import json, sys, time
c0 = time.process_time()
import torch
from torch import nn
c1 = time.process_time()
if sys.argv[1] == "ours":
    from learner.trainer import Adam
else:
    Adam = torch.optim.Adam
c2 = time.process_time()
torch.manual_seed(0)
m = nn.Sequential(nn.Linear(4, 64), nn.Tanh(), nn.Linear(64, 2))
opt = Adam(m.parameters(), lr=1e-3, eps=1e-5)
for i in range(20):
    opt.zero_grad()
    m(torch.randn(32, 4)).pow(2).mean().backward()
    opt.step()
opt.load_state_dict(opt.state_dict())
c3 = time.process_time()
print(json.dumps({"import_torch_s": c1 - c0, "steps_s": c3 - c2,
                  "dynamo_imported": "torch._dynamo" in sys.modules}))
"""


def probe(variant: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _PROBE, variant], capture_output=True, text=True, cwd=ROOT,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    runs: dict[str, list[dict]] = {"torch": [], "ours": []}
    for _ in range(args.repeats):
        for variant in runs:
            runs[variant].append(probe(variant))
    med = {v: {k: statistics.median(r[k] for r in rs) for k in ("import_torch_s", "steps_s")} for v, rs in runs.items()}
    for v, rs in runs.items():
        print(f"{v:5s}  import torch {med[v]['import_torch_s']:.2f} s CPU, first 20 steps {med[v]['steps_s']:.2f} s CPU, "
              f"torch._dynamo imported: {rs[0]['dynamo_imported']}  (median of {len(rs)})")
    print(f"adam start ratio: {med['torch']['steps_s'] / med['ours']['steps_s']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
