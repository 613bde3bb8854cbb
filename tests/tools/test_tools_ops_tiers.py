"""``tinyllm ops`` reports each op's kernel tiers from the kernel layer, not from a hand list."""

import json

import pytest

from tinyllm import kernels
from tinyllm.cli import main as cli_main
from tinyllm.cli.ops_cmd import op_rows

# ops whose Function calls tinyllm.kernels (the review found them listed as ("reference",))
KERNEL_OPS = ["cross_entropy", "geglu", "gelu", "layer_norm", "log_softmax", "rms_norm",
              "silu", "softmax", "swiglu"]  # fmt: skip


@pytest.fixture(scope="module")
def rows():
    return {r["op"]: r for r in op_rows(check=False)}


@pytest.mark.parametrize("name", KERNEL_OPS)
def test_ops_that_call_kernels_report_the_kernels_tiers(rows, name):
    row = rows[name]
    assert row["kernels"], f"{name} names no kernel"
    want = {t for k in row["kernels"] for t in kernels.kernel_tiers(k)}
    assert row["tiers"] == [t for t in kernels.TIERS if t in want]
    assert row["tiers"][:2] == ["reference", "numba"], row


def test_ops_without_kernels_report_no_tier_not_a_made_up_one(rows):
    for name in ("add", "matmul", "glu", "group_norm", "clone"):
        assert rows[name]["kernels"] == [] and rows[name]["tiers"] == [], rows[name]
    every = {t for r in rows.values() for t in r["tiers"]}
    assert every <= set(kernels.TIERS), every  # no "blas" or other non-dispatch tier


def test_ops_table_and_json_show_the_tiers(capsys):
    assert cli_main.main(["ops", "--no-check", "--family", "norms", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_op = {r["op"]: r for r in lines}
    assert by_op["layer_norm"]["tiers"][:2] == ["reference", "numba"]
    assert by_op["group_norm"]["tiers"] == []
    assert cli_main.main(["ops", "--no-check", "--family", "norms"]) == 0
    table = capsys.readouterr().out
    assert "tiers" in table.splitlines()[0]
    (layer_norm,) = [line for line in table.splitlines() if line.startswith("layer_norm ")]
    assert "reference,numba" in layer_norm
