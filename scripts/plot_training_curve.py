"""Plot a `cljassist train fit` run: training loss per step (with a moving average) and the
validation loss and token accuracy per evaluation, into one PNG.

    python scripts/plot_training_curve.py RUN_DIR [OUT.png]      (needs matplotlib: the plots extra)

Reads RUN_DIR/steps.jsonl and RUN_DIR/curve.jsonl as `train fit` writes them. When
RUN_DIR/checkpoint_em.jsonl exists (scripts/checkpoint_em.py), a third panel shows the validation
exact match and edit similarity of the engine's greedy completion per checkpoint; step 0 there is
the base model zero-shot, prompted left to right (it has no trained FIM tokens), drawn apart.
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


def plot_checkpoint_em(ax, rows: list[dict]) -> None:
    """Validation EM and ES per checkpoint; the step-0 base (left-to-right prompt) as open markers."""
    rows = sorted((r for r in rows if r.get("em") is not None), key=lambda r: r["step"])
    trained = [r for r in rows if r["step"] > 0]
    base = [r for r in rows if r["step"] == 0]
    if trained:
        xs = [r["step"] for r in trained]
        ax.plot(xs, [r["em"] for r in trained], "o-", color="C3", label="EM (checkpoint, FIM prompt)")
        ax.plot(xs, [r["es"] for r in trained], "s--", color="C0", label="ES (checkpoint, FIM prompt)")
    if base:
        ax.plot([0], [base[0]["em"]], "o", mfc="none", color="C3", markersize=9,
                label="EM step 0: base zero-shot, left to right")
        ax.plot([0], [base[0]["es"]], "s", mfc="none", color="C0", markersize=9,
                label="ES step 0: base zero-shot, left to right")
    n = rows[-1].get("n") if rows else None
    ax.set_title(f"validation EM per checkpoint (greedy, no REPL, n={n})", fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel("share of items")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)


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

    checkpoint_em = read_jsonl(run / "checkpoint_em.jsonl")
    panels = 3 if checkpoint_em else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4))
    ax_loss, ax_acc = axes[0], axes[1]
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
    if checkpoint_em:
        plot_checkpoint_em(axes[2], checkpoint_em)
    tokens = steps[-1].get("tokens_seen", 0)
    fig.suptitle(f"cljassist train fit: {run.name}, {len(steps)} steps, {tokens:,} tokens seen")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
