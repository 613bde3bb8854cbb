"""``experiments/reference_band.py``'s command line (the parser only, nothing trains): flags
that would be silently ignored are errors; the band commands in use keep parsing as before."""

import sys
from pathlib import Path

import pytest

from tinyllm.train import TrainConfig

sys.path.insert(0, str(Path(__file__).parents[2] / "experiments"))
from reference_band import band_config, parse_args  # noqa: E402


def test_training_and_merge_commands_parse_as_before():
    args = parse_args(["--arch", "mamba", "--seeds", "4", "--out", "f.json", "--runs-dir", "d"])
    assert (args.arch, args.seeds, args.out, args.runs_dir) == ("mamba", [4], "f.json", "d")
    assert (args.steps, args.moe_experts, args.moe_top_k, args.from_runs, args.merge) == (
        None, 0, None, None, None)  # fmt: skip
    config = band_config(args.arch, args.steps, args.moe_experts, args.moe_top_k)
    assert config.to_dict() == TrainConfig(arch="mamba").to_dict()
    default = parse_args([])
    assert (default.arch, default.moe_experts, default.seeds) == ("llama", 0, [0, 1, 2])
    merge = parse_args(["--merge", "a.json", "b.json"])
    assert merge.merge == ["a.json", "b.json"] and merge.arch == "llama"
    moe = parse_args(["--moe-experts", "8", "--moe-top-k", "2", "--seeds", "0"])
    assert band_config(moe.arch, moe.steps, moe.moe_experts, moe.moe_top_k).moe_top_k == 2
    assert parse_args(["--from-runs", "r0", "r1"]).from_runs == ["r0", "r1"]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--moe-top-k", "2"], "--moe-top-k applies to an MoE run"),
        (["--moe-experts", "0", "--moe-top-k", "1"], "--moe-top-k applies to an MoE run"),
        (["--from-runs", "r0", "--arch", "mamba"], "--arch would be ignored"),
        (["--from-runs", "r0", "--steps", "100"], "--steps would be ignored"),
        (["--from-runs", "r0", "--moe-experts", "8", "--moe-top-k", "2"],
         "--moe-experts, --moe-top-k would be ignored"),
        (["--arch", "llama", "--from-runs", "r0"], "--arch would be ignored"),
    ],
)  # fmt: skip
def test_ignored_flags_are_parser_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
