"""Plot a `cljassist train fit` run: training loss per step (with a moving average) and the
validation loss and token accuracy per evaluation, into one PNG.

    python scripts/plot_training_curve.py RUN_DIR [OUT.png]      (needs matplotlib: the train extra)

Reads RUN_DIR/steps.jsonl and RUN_DIR/curve.jsonl as `train fit` writes them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    run = Path(argv[0])
    out = Path(argv[1]) if len(argv) > 1 else run / "curve.png"
    steps, evals = read_jsonl(run / "steps.jsonl"), read_jsonl(run / "curve.jsonl")
    if not steps:
        print(f"{run}/steps.jsonl: no steps to plot", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4))
    xs = [s["step"] for s in steps]
    losses = [s["loss"] for s in steps]
    ax_loss.plot(xs, losses, color="0.8", linewidth=0.8, label="train loss (step)")
    ax_loss.plot(xs, moving_average(losses, 20), color="C0", label="train loss (20-step mean)")
    if evals:
        ax_loss.plot([e["step"] for e in evals], [e["valid_loss"] for e in evals], "o-", color="C3",
                     label="valid loss")
        ax_acc.plot([e["step"] for e in evals], [e["valid_token_acc"] for e in evals], "o-", color="C2")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("loss on the middle (nats/token)")
    ax_loss.legend()
    ax_acc.set_xlabel("step")
    ax_acc.set_ylabel("valid token accuracy (teacher forcing)")
    tokens = steps[-1].get("tokens_seen", 0)
    fig.suptitle(f"cljassist train fit: {run.name}, {len(steps)} steps, {tokens:,} tokens seen")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
