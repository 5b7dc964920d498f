"""Learning-curve plot of a toy training run (matplotlib is imported lazily; it is in the ``eval`` extra)."""

from __future__ import annotations

from pathlib import Path

from mmaccel.errors import ConfigError


def plot_curve(curve: list[dict], out: Path) -> None:
    """Plot stage-1 and stage-2 losses and accuracies against training minutes into the PNG ``out``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ConfigError("plotting needs matplotlib: pip install 'mmaccel[eval]'") from error
    vision = [record for record in curve if record["stage"] == "vision"]
    llm = [record for record in curve if record["stage"] == "llm"]
    offset = vision[-1]["minutes"] if vision else 0.0
    figure, (loss_axis, accuracy_axis) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=80)
    loss_axis.plot([r["minutes"] for r in vision], [r["loss"] for r in vision], label="stage 1 (tower, sum of heads)")
    guides = sorted({key for r in llm for key in r if key.startswith("guide_")})
    stage2 = "stage 2 (answer tokens + guidance)" if guides else "stage 2 (answer tokens)"
    loss_axis.plot([offset + r["minutes"] for r in llm], [r["loss"] for r in llm], label=stage2)
    for key in guides:  # the attention-guidance terms (mmaccel.toy.training.guidance), each -log of a target mass
        points = [(offset + r["minutes"], r[key]) for r in llm if r.get(key, 0) > 0]
        if points:
            loss_axis.plot(*zip(*points), "--", linewidth=0.8, label=key.replace("guide_", "guidance: "))
    loss_axis.set_yscale("log")
    loss_axis.set_xlabel("training minutes")
    loss_axis.set_ylabel("loss")
    loss_axis.legend(fontsize=8)
    for key, label in (("acc_color", "patch colour"), ("acc_shape", "patch shape"), ("acc_character", "character")):
        accuracy_axis.plot([r["minutes"] for r in vision], [100 * r[key] for r in vision], label=f"stage 1 {label}")
    accuracy_axis.plot(
        [offset + r["minutes"] for r in llm], [100 * r["token_acc"] for r in llm], label="stage 2 answer tokens"
    )
    heldout = [r for r in llm if "heldout" in r]
    if heldout:
        accuracy_axis.plot(
            [offset + r["minutes"] for r in heldout],
            [r["heldout"]["all"] for r in heldout],
            "o-",
            label="stage 2 held-out (all types)",
        )
    accuracy_axis.set_xlabel("training minutes")
    accuracy_axis.set_ylabel("accuracy (%)")
    accuracy_axis.set_ylim(0, 100)
    accuracy_axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
