# ruff: noqa: E501  (markdown cells: LaTeX lines may be long; code cells are linted in the .ipynb)
# %% [markdown]
# # 9. BPE and WordPiece, step by step
#
# **Byte-level BPE** starts from the 256 byte values and repeats: count every adjacent pair
# of tokens in the training text, and merge the most frequent pair $(a, b)$ into a new token
# $ab$ everywhere it occurs. After $k$ merges the vocabulary has $256 + k$ tokens. Encoding new text
# replays the merges in the order they were learned.
#
# **WordPiece** (BERT) splits each word greedily: the longest prefix in the vocabulary, then
# the longest continuation piece written `##...`, and so on; a word that cannot be covered is `[UNK]`.
#
# In symbols, one BPE step on a token sequence $s$ picks
#
# $$(a, b) = \arg\max_{(x, y)} \#\{\, i : s_i = x,\ s_{i+1} = y \,\}$$
#
# and replaces the occurrences, left to right, by the new token.
#
# Where the gradient comes in: a model looks tokens up in an embedding table, $e_t = W[\text{id}_t]$.
# The backward of a lookup is a scatter-add,
#
# $$\bar W[v] = \sum_{t:\ \text{id}_t = v} \bar e_t ,$$
#
# so the tokenizer decides how many gradient contributions each row of $W$ receives.

# %%
from collections import Counter

import matplotlib.pyplot as plt
import numpy as np

import tinyllm
import tinyllm.functional as F
from tinyllm.tokenizers import BPETokenizer, WordPieceTokenizer

text = (
    "the cat sat on the mat. the cat ate the rat. that rat sat on that mat, "
    "then the cat and the rat sat together on the mat."
) * 3
k = 30
tok = BPETokenizer.train(text, vocab_size=256 + k, pattern=None)
print(
    "learned",
    len(tok.merges),
    "merges; the first ten:",
    [tok.id_to_bytes(256 + i).decode() for i in range(10)],
)

# %% [markdown]
# Replaying training by hand: at every step, tinyllm's merge must be a pair of maximal count in
# *our own* count of the current sequence (ties may be broken either way); we then apply it.


# %%
def merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


ids = list(text.encode("utf-8"))
lengths = [len(ids)]
for rank, (left, right) in enumerate(tok.merges):
    counts = Counter(zip(ids, ids[1:]))
    best = max(counts.values())
    assert counts[left, right] == best, f"merge {rank} is not a most frequent pair"
    ids = merge(ids, (left, right), 256 + rank)
    lengths.append(len(ids))
assert ids == tok.encode(text), "replayed training must equal encoding the training text"
assert tok.decode(ids) == text
print(f"{len(text.encode())} bytes -> {len(ids)} tokens after {k} merges")

# %% [markdown]
# WordPiece with a tiny vocabulary, against a 10-line greedy longest-match written here:

# %%
vocab = {
    t: i
    for i, t in enumerate(
        [
            "[UNK]",
            "[CLS]",
            "[SEP]",
            "[PAD]",
            "un",
            "##aff",
            "##able",
            "aff",
            "##ord",
            "the",
            "cat",
            "##s",
            "s",
        ]
    )
}
wp = WordPieceTokenizer(vocab)


def greedy(word):
    pieces, start = [], 0
    while start < len(word):
        for end in range(len(word), start, -1):
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in vocab:
                pieces.append(piece)
                start = end
                break
        else:
            return ["[UNK]"]
    return pieces


for word in ["unaffable", "affordable", "cats", "the", "dogs"]:
    print(f"{word:12s} {wp.wordpiece(word)}")
    assert list(wp.wordpiece(word)) == greedy(word)
print(wp.tokenize("The cats unaffable"))

# %% [markdown]
# The embedding backward is a scatter-add over the ids: gradchecked on the BPE ids, and with an
# all-ones cotangent each row's gradient equals the number of times its token occurs.

# %%
V, E = tok.vocab_size, 4
W = tinyllm.randn(V, E, dtype="float64", requires_grad=True)
idx = tinyllm.tensor(np.array(ids[:40]))
assert tinyllm.gradcheck(lambda w: F.embedding(idx, w), [W])
print("gradcheck passed: embedding over BPE ids")

F.embedding(tinyllm.tensor(np.array(ids)), W).sum().backward()
occurrences = np.bincount(ids, minlength=V)
assert np.allclose(W.grad.numpy()[:, 0], occurrences)

fig, axes = plt.subplots(1, 2, figsize=(12, 3.5))
axes[0].plot(np.arange(k + 1), len(text.encode()) / np.array(lengths), "o-")
axes[0].set_xlabel("merges")
axes[0].set_ylabel("bytes per token")
used = np.nonzero(occurrences)[0]
axes[1].bar(range(len(used)), occurrences[used])
axes[1].set_xticks(range(len(used)))
axes[1].set_xticklabels(
    [repr(tok.id_to_bytes(i).decode())[1:-1] for i in used], rotation=90, fontsize=7
)
axes[1].set_ylabel("gradient row sum = occurrences")
plt.tight_layout()
plt.show()
