"""The digits split (tinyllm/vision/data.py): the validation holdout is carved from the
training part only, so choosing settings on it never looks at a test image; the test
holdout is the seed's 20% split."""

import numpy as np
import pytest

from tinyllm.vision.data import load_digits_split

pytest.importorskip("sklearn")


def _rows(x):
    return {r.tobytes() for r in x.reshape(len(x), -1)}


@pytest.mark.parametrize("seed", [0, 1])
def test_validation_holdout_never_contains_test_images(seed):
    test = load_digits_split(seed)
    val = load_digits_split(seed, holdout="validation")
    assert len(test.y_test) == 359 and len(test.y_train) == 1797 - 359
    assert len(val.y_test) == round(0.2 * len(test.y_train))
    assert len(val.y_train) + len(val.y_test) == len(test.y_train)
    # the validation images and the new training images are exactly the old training images
    # (compared as multisets of rows: load_digits has a few duplicate images)
    old = sorted(r.tobytes() for r in test.x_train.reshape(len(test.x_train), -1))
    new = sorted(r.tobytes() for r in np.concatenate([val.x_train, val.x_test]).reshape(-1, 64))
    assert old == new
    only_test = _rows(test.x_test) - _rows(test.x_train)  # test images seen nowhere in train
    assert only_test and not only_test & _rows(val.x_test) and not only_test & _rows(val.x_train)


def test_bad_holdout_names_the_argument():
    with pytest.raises(ValueError, match="load_digits_split: holdout"):
        load_digits_split(0, holdout="train")
