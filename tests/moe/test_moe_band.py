"""The reference band of the MoE default run (``tinyllm train --moe-experts 8 --moe-top-k 2``):
stored next to the dense band under its own key, covering its own seeds, applying to MoE runs
of that configuration only, and checked by ``tinyllm train`` at each evaluation."""

import json
import sys
from pathlib import Path

import pytest

from tinyllm.train import TrainConfig, train
from tinyllm.train import band as reference_band
from tinyllm.train.config import saved_value

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
MOE_DEFAULT = TrainConfig(moe_experts=8, moe_top_k=2)


def test_band_keys_keep_moe_runs_off_the_dense_band():
    assert reference_band.band_key(TrainConfig().to_dict()) == "llama"
    assert reference_band.band_key(MOE_DEFAULT.to_dict()) == "llama-moe"
    assert reference_band.band_key(TrainConfig(arch="mamba").to_dict()) == "mamba"
    assert reference_band.band_key({"arch": "llama"}) == "llama"  # an old config: no MoE keys
    dense = reference_band.load_band("llama")
    # were an MoE run looked up under the dense key, the MoE fields would still keep it off
    assert "moe_experts=8 (band: 0)" in reference_band.band_mismatches(dense, MOE_DEFAULT.to_dict())
    assert reference_band.band_applies(dense, TrainConfig(seed=3).to_dict())


def test_the_stored_moe_band_covers_its_own_seeds_and_applies_to_the_moe_default_run():
    band = reference_band.load_band("llama-moe")
    assert band is not None and len(band["seeds"]) >= 3
    sys.path.insert(0, str(EXPERIMENTS))
    from reference_band import band_config

    assert band["config"] == band_config("llama", None, 8, 2).to_dict() == MOE_DEFAULT.to_dict()
    assert reference_band.band_applies(
        band, TrainConfig(moe_experts=8, moe_top_k=2, seed=9).to_dict()
    )
    for other in (TrainConfig(), TrainConfig(moe_experts=8, moe_top_k=1),
                  TrainConfig(moe_experts=8, moe_top_k=2, moe_router="aux_free"),
                  TrainConfig(moe_experts=8, moe_top_k=2, moe_shared_experts=1)):  # fmt: skip
        assert not reference_band.band_applies(band, other.to_dict())
    assert band["steps"] and all(s % MOE_DEFAULT.eval_interval == 0 for s in band["steps"])
    for values in band["per_seed"].values():
        for step, v in zip(band["steps"], values):
            assert "inside" in reference_band.check(band, step, v)
    assert all(lo <= hi for lo, hi in zip(band["min"], band["max"]))
    # learning: bits/byte falls from the first evaluation to the last
    assert band["max"][-1] < band["min"][0]
    # the dense band is still there, unchanged in kind
    dense = reference_band.load_band("llama")["config"]  # measured before the MoE fields existed
    assert saved_value(dense, "moe_experts") == 0 and "moe_experts" not in dense


def _tiny(tmp_path, **kw):
    values = dict(d_model=16, n_layer=1, n_head=2, seq_len=16, batch_size=2, steps=4, lr=3e-3,
                  warmup=1, eval_interval=2, eval_batches=1, log_interval=1,
                  checkpoint_interval=100, out_dir=str(tmp_path), name="m", sample_tokens=0,
                  moe_experts=4, moe_top_k=2, moe_expert_hidden=16)  # fmt: skip
    values.update(kw)
    return TrainConfig(**values)


def test_train_checks_an_moe_run_against_the_moe_band(tmp_path, monkeypatch):
    """A band measured for this (tiny) MoE configuration is looked up under 'llama-moe' and
    each evaluation gets its verdict; a band that does not apply is named with the reason."""
    config = _tiny(tmp_path)
    looked_up = []
    fake = {"config": config.to_dict(), "seeds": [0, 1, 2], "steps": [2, 4],
            "min": [0.0, 0.0], "max": [100.0, 0.01]}  # fmt: skip

    def load_band(key="llama"):
        looked_up.append(key)
        return fake

    monkeypatch.setattr(reference_band, "load_band", load_band)
    said = []
    result = train(config, progress=False, echo=said.append)
    assert looked_up == ["llama-moe"]
    lines = [json.loads(x) for x in (result.run_dir / "log.jsonl").read_text().splitlines()]
    verdicts = {r["step"]: r["band"] for r in lines if "band" in r}
    assert verdicts[2].startswith("inside the reference band [0.000, 100.000]")
    assert verdicts[4].startswith("ABOVE the reference band")
    said.clear()
    other = _tiny(tmp_path / "o", moe_router="topk_softmax")
    train(other, progress=False, echo=said.append)
    assert any("moe_router='topk_softmax' (band: 'softmax_topk')" in s for s in said), said


def test_no_moe_band_says_how_to_measure_one(tmp_path, monkeypatch):
    monkeypatch.setattr(reference_band, "load_band", lambda key="llama": None)
    said = []
    train(_tiny(tmp_path, steps=2), progress=False, echo=said.append)
    want = "experiments/reference_band.py --arch llama --moe-experts 4 --moe-top-k 2"
    assert any(want in s for s in said), said


def test_writing_the_moe_band_keeps_the_dense_band(tmp_path, monkeypatch):
    sys.path.insert(0, str(EXPERIMENTS))
    import reference_band as script

    out = tmp_path / "bands.json"
    dense = reference_band.load_band("llama")
    out.write_text(json.dumps(dense))  # the first, single-band format
    monkeypatch.setattr(script, "OUT", out)
    moe = {**dense, "config": MOE_DEFAULT.to_dict(), "seeds": [5]}
    script.write_band(moe, out)
    bands = reference_band.bands_of(json.loads(out.read_text()))
    assert list(bands) == ["llama", "llama-moe"]
    assert bands["llama"] == dense and bands["llama-moe"]["seeds"] == [5]


def test_band_from_run_folders_covers_the_steps_every_seed_reached(tmp_path):
    sys.path.insert(0, str(EXPERIMENTS))
    import reference_band as script

    for seed, (steps, base) in enumerate([([2, 4], 3.0), ([2], 3.2), ([2, 4], 2.9)]):
        run = tmp_path / f"s{seed}"
        run.mkdir()
        cfg = _tiny(tmp_path, seed=seed, name=f"s{seed}")
        (run / "config.json").write_text(json.dumps(cfg.to_dict()))
        lines = [{"step": s, "val_bits_per_byte": base - s / 10, "elapsed_s": s} for s in steps]
        (run / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    curves, seconds, config = script.curves_from_runs([str(tmp_path / f"s{i}") for i in range(3)])
    assert config.seed == 0 and config.name is None and config.moe_experts == 4
    band = script.make_band(curves, seconds, "cmd", config)
    assert band["steps"] == [2]  # seed 1 stopped before step 4
    # min over seeds 2.9 - 0.2, max 3.2 - 0.2, rounded outward to 4 decimals (1e-4, plus the float error of 2.9 - 0.2 landing below 2.7)
    assert band["min"] == [pytest.approx(2.7, abs=1.5e-4)] and band["min"][0] <= 2.9 - 0.2
    assert band["max"] == [pytest.approx(3.0, abs=1.5e-4)] and band["max"][0] >= 3.2 - 0.2
    (tmp_path / "s1" / "config.json").write_text(json.dumps(_tiny(tmp_path, lr=1.0).to_dict()))
    with pytest.raises(SystemExit, match="another configuration"):
        script.curves_from_runs([str(tmp_path / "s0"), str(tmp_path / "s1")])
