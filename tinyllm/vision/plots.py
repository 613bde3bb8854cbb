"""PNG figures for the vision runs (matplotlib, Agg backend)."""

from __future__ import annotations


def plot_attention(model, x, labels, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    import tinyllm
    from tinyllm.models.vit import attention_rollout

    roll = attention_rollout(model.attention_maps(tinyllm.tensor(x)))
    n = len(x)
    fig, ax = plt.subplots(2, n, figsize=(1.4 * n, 3))
    for i in range(n):
        ax[0, i].imshow(x[i, 0], cmap="gray_r")
        ax[0, i].set_title(str(labels[i]), fontsize=9)
        ax[1, i].imshow(roll[i].reshape(4, 4), cmap="viridis")
        for a in ax[:, i]:
            a.axis("off")
    fig.suptitle("ViT attention rollout (class token -> 2x2 patches), seed 0", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_captions(x, words, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(x)
    fig, ax = plt.subplots(1, n, figsize=(1.9 * n, 2.3))
    for i in range(n):
        ax[i].imshow(x[i, 0], cmap="gray_r")
        ax[i].set_title("\n".join([" ".join(words[i][:3]), " ".join(words[i][3:])]), fontsize=7)
        ax[i].axis("off")
    fig.suptitle("greedy captions (test images), seed 0", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
