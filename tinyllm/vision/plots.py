"""PNG figures for the vision runs (matplotlib, Agg backend)."""

from __future__ import annotations

import numpy as np

__all__ = ["caption_examples", "plot_attention", "plot_captions"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_attention(model, x, labels, path, title: str = "") -> None:
    """Per image: the digit, the attention rollout of the class token over the patches
    (its grid), and the rollout upsampled onto the digit."""
    import tinyllm
    from tinyllm.models.vit import attention_rollout

    plt = _pyplot()
    roll = attention_rollout(model.attention_maps(tinyllm.tensor(x)), model.num_prefix)
    gh, gw = model.patch_embed.grid_size
    pred = model(tinyllm.tensor(x)).detach().numpy().argmax(1)
    n = len(x)
    fig, ax = plt.subplots(3, n, figsize=(1.35 * n, 4.4))
    for i in range(n):
        grid = roll[i].reshape(gh, gw)
        up = np.kron(grid, np.ones((x.shape[-2] // gh, x.shape[-1] // gw)))
        ax[0, i].imshow(x[i, 0], cmap="gray_r")
        ax[0, i].set_title(f"label {labels[i]} / pred {pred[i]}", fontsize=7)
        ax[1, i].imshow(grid, cmap="viridis")
        ax[2, i].imshow(x[i, 0], cmap="gray")
        ax[2, i].imshow(up, cmap="inferno", alpha=0.6)
        for a in ax[:, i]:
            a.set_xticks([])
            a.set_yticks([])
    ax[0, 0].set_ylabel("digit", fontsize=8)
    ax[1, 0].set_ylabel(f"rollout {gh}x{gw}", fontsize=8)
    ax[2, 0].set_ylabel("overlay", fontsize=8)
    fig.suptitle(f"ViT attention rollout: class token -> patches ({title})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def caption_examples(words, labels, n_first: int = 8, n_wrong: int = 4) -> list[int]:
    """Indices to show: the first ``n_first`` test images and the first ``n_wrong`` wrongly
    captioned ones after them (so a picture shows the failures too)."""
    from tinyllm.vision.train import caption_accuracy

    first = list(range(min(n_first, len(labels))))
    wrong = [i for i in range(n_first, len(labels))
             if caption_accuracy([words[i]], [labels[i]]) == 0.0]  # fmt: skip
    return first + wrong[:n_wrong]


def plot_captions(x, words, labels, path, title: str = "", cols: int = 4) -> None:
    """Each image with its greedy caption: green when it names exactly the right digit."""
    from tinyllm.vision.train import caption_accuracy

    plt = _pyplot()
    n = len(x)
    cols = min(n, cols)
    rows = -(-n // cols)
    fig, ax = plt.subplots(rows, cols, figsize=(2.1 * cols, 2.6 * rows), squeeze=False)
    for k, a in enumerate(ax.ravel()):
        a.axis("off")
        if k >= n:
            continue
        ok = caption_accuracy([words[k]], [labels[k]]) == 1.0
        a.imshow(x[k, 0], cmap="gray_r")
        w = words[k]
        text = " ".join(w[:3]) + ("\n" + " ".join(w[3:]) if len(w) > 3 else "")
        a.set_title(f"{text}\n(label {labels[k]})", fontsize=7,
                    color="tab:green" if ok else "tab:red")  # fmt: skip
    fig.suptitle(f"greedy captions of test images, green = right digit ({title})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
