"""Reference bands of the default vision runs (tinyllm/vision/band.py, bands.json): the band
of a set of runs is their min..max per metric; a run is placed inside / above / below it,
and a run of other settings gets no band; the stored bands describe today's default runs
(so they cannot silently drift from what ``tinyllm vision train`` runs)."""

import json

import pytest

from tinyllm.vision import band as B
from tinyllm.vision.runs import DEFAULT_STEPS, run_task


def _caption_run(seed, acc, **over):
    row = {
        "task": "caption",
        "seed": seed,
        "steps": 600,
        "projector": "mlp",
        "vit_steps": 1500,
        "vit_lr_mult": 0.0,
        "pos_embed": "learned",
        "caption_accuracy": acc,
    }
    return {**row, **over}


def test_make_band_is_min_max_over_seeds():
    band = B.make_band([_caption_run(0, 0.9), _caption_run(1, 0.95), _caption_run(2, 0.92)])
    m = band["metrics"]["caption_accuracy"]
    assert (m["min"], m["max"], band["seeds"]) == (0.9, 0.95, [0, 1, 2])
    assert m["mean"] == pytest.approx((0.9 + 0.95 + 0.92) / 3)
    assert band["config"] == {
        "steps": 600,
        "projector": "mlp",
        "vit_steps": 1500,
        "vit_lr_mult": 0.0,
        "pos_embed": "learned",
    }
    with pytest.raises(ValueError, match="different settings"):
        B.make_band([_caption_run(0, 0.9), _caption_run(1, 0.9, steps=601)])
    with pytest.raises(ValueError, match="repeated seeds"):
        B.make_band([_caption_run(0, 0.9), _caption_run(0, 0.9)])


def test_band_lines_inside_below_above_and_other_settings():
    bands = {"caption": B.make_band([_caption_run(0, 0.9), _caption_run(1, 0.95)])}
    (inside,) = B.band_lines(_caption_run(5, 0.93), bands)
    assert inside.startswith("caption_accuracy 0.930: inside the reference band [0.900, 0.950]")
    assert "BELOW" in B.band_lines(_caption_run(5, 0.5), bands)[0]
    assert "above" in B.band_lines(_caption_run(5, 0.99), bands)[0]
    (other,) = B.band_lines(_caption_run(0, 0.93, projector="perceiver"), bands)
    assert other.startswith("no reference band for this caption configuration")
    assert "projector='perceiver' (band: 'mlp')" in other
    assert B.band_lines({"task": "vit"}, {})[0].startswith("no reference band for vit")


def test_stored_bands_describe_the_default_runs():
    bands = B.load_bands()
    if not bands:
        pytest.skip("no bands.json in the package")
    assert sorted(bands) == ["caption", "clip", "vit"]
    # the default settings, as run_task records them (steps from DEFAULT_STEPS)
    defaults = {"vit": {"steps": DEFAULT_STEPS["vit"], "pos_embed": "learned"},
                "clip": {"steps": DEFAULT_STEPS["clip"]},
                "caption": {"steps": DEFAULT_STEPS["caption"], "projector": "mlp",
                            "vit_steps": DEFAULT_STEPS["vit"], "vit_lr_mult": 0.0,
                            "pos_embed": "learned"}}  # fmt: skip
    for task, band in bands.items():
        assert band["config"] == defaults[task], task
        assert band["seeds"] == [0, 1, 2]
        for m in B.BAND_METRICS[task]:
            v = band["metrics"][m]
            assert len(v["values"]) == 3 and 0.0 <= v["min"] <= v["mean"] <= v["max"] <= 1.0
            assert (v["min"], v["max"]) == (min(v["values"]), max(v["values"]))
    json.dumps(bands)  # plain JSON


def test_run_task_rejects_bad_arguments():
    with pytest.raises(ValueError, match="run_task: task"):
        run_task("detr")
    with pytest.raises(ValueError, match="run_task: steps"):
        run_task("vit", steps=0)


@pytest.mark.slow  # ~15 s quiet (a full default ViT run, 1500 steps)
def test_default_vit_run_of_a_band_seed_lands_inside_its_band():
    """Seed 0 is one of the band's seeds: the same run on the same software reproduces it."""
    pytest.importorskip("sklearn")
    bands = B.load_bands()
    if "vit" not in bands:
        pytest.skip("no vit band stored")
    metrics = run_task("vit", 0, quiet=True).metrics
    (line,) = B.band_lines(metrics, bands)
    assert "inside the reference band" in line, line
