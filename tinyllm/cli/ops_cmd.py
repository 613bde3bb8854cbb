"""``tinyllm ops``: every registered op, its family, its kernel tiers, and its gradcheck here.

The tiers come from the kernel layer: each op names the kernels it calls (``OpInfo.kernels``)
and each kernel declares the bodies it has (``tinyllm.kernels.kernel_tiers``); "-" means the
op calls no kernel (its array code runs on NumPy or CuPy directly).

::

    tinyllm ops                     # table; gradchecks every op's samples (a second or two)
    tinyllm ops --no-check          # just the registry
    tinyllm ops --family norms --json

The gradcheck column runs ``gradcheck_report`` (float64, random cotangent) on each of the
op's registry samples, as ``tinyllm gradcheck`` does, and says ``pass k/k``, ``FAIL j/k``,
``error`` (the op raised; the message follows in JSON) or ``n/a`` (the op is not
differentiable). Exit status 1 if any op fails or errors.
"""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "ops",
        help="list every registered op: family, kernel tiers, gradcheck on this machine",
        description="List every op of the registry with its family and kernel tiers, and "
        "gradcheck it on its registry samples (float64, random cotangent).",
    )
    p.add_argument("--family", help="only ops of this family (e.g. norms, softmax)")
    p.add_argument("--no-check", action="store_true", help="skip the gradchecks")
    p.add_argument("--json", action="store_true", help="print one JSON line per op")
    p.set_defaults(func=run)


def check_op(name: str) -> dict:
    """Gradcheck every sample of op ``name``: {"gradcheck", "samples", "failed", errors...}."""
    from tinyllm.cli.gradcheck_cmd import gradcheck_rows

    passed = failed = 0
    max_abs = max_rel = 0.0
    try:
        for row in gradcheck_rows([name]):
            passed += row["passed"]
            failed += not row["passed"]
            max_abs = max(max_abs, row["max_abs_error"])
            max_rel = max(max_rel, row["max_rel_error"])
    except Exception as e:  # a broken op is reported, not fatal to the listing
        return {"gradcheck": "error", "error": f"{type(e).__name__}: {e}"}
    total = passed + failed
    if total == 0:
        return {"gradcheck": "n/a", "samples": 0}
    return {
        "gradcheck": "pass" if failed == 0 else "fail",
        "samples": total,
        "failed": failed,
        "max_abs_error": max_abs,
        "max_rel_error": max_rel,
    }


def op_rows(family: str | None = None, check: bool = True):
    """Yield one dict per registered op (sorted by name): op, family, kernels (the kernel ops
    it calls), tiers (the tiers those kernels have), gradcheck."""
    from tinyllm.registry import all_ops

    ops = all_ops()
    families = sorted({info.family for info in ops.values()})
    if family is not None and family not in families:
        raise SystemExit(f"tinyllm ops: unknown family {family!r}; known: {families}")
    for name, info in sorted(ops.items()):
        if family is not None and info.family != family:
            continue
        row = {
            "op": name,
            "family": info.family,
            "kernels": list(info.kernels),
            "tiers": list(info.tiers),
        }
        if not info.differentiable:
            row["gradcheck"] = "n/a"
        elif check:
            row.update(check_op(name))
        else:
            row["gradcheck"] = None
        yield row


def _verdict(row: dict) -> str:
    verdict = row["gradcheck"]
    if verdict == "pass":
        return f"pass {row['samples']}/{row['samples']}"
    if verdict == "fail":
        return f"FAIL {row['failed']}/{row['samples']}"
    if verdict == "error":
        return "ERROR"
    return "-" if verdict is None else verdict


def run(args) -> int:
    bad = total = 0
    if not args.json:
        print(f"{'op':<30} {'family':<12} {'tiers':<24} {'gradcheck':<11} {'max rel err':>11}")
        print("-" * 92)
    errors = []
    for row in op_rows(args.family, check=not args.no_check):
        total += 1
        bad += row["gradcheck"] in ("fail", "error")
        if args.json:
            print(json.dumps(row))
        else:
            rel = f"{row['max_rel_error']:.2e}" if "max_rel_error" in row else ""
            print(
                f"{row['op']:<30} {row['family']:<12} {','.join(row['tiers']) or '-':<24} "
                f"{_verdict(row):<11} {rel:>11}"
            )
            if row["gradcheck"] == "error":
                errors.append(f"{row['op']}: {row['error']}")
        sys.stdout.flush()
    if not args.json:
        print("-" * 92)
        summary = f"{total} ops"
        if not args.no_check:
            summary += f", {bad} failing gradcheck" if bad else ", all gradchecks pass"
        print(summary)
        for line in errors:
            print(f"error in {line}")
    return 1 if bad else 0
