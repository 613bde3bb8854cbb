"""``tinyllm gradcheck``: gradcheck every registered op and print a table."""

from __future__ import annotations

import json
import sys
import time


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "gradcheck",
        help="gradcheck every registered op (float64, random cotangent) and print a table",
        description="Check every registered op's hand-written backward against central "
        "differences in float64 under a random cotangent. Exit status 1 if any fails.",
    )
    p.add_argument("ops", nargs="*", help="only these ops (default: all)")
    p.add_argument("--family", help="only ops of this family (e.g. softmax, shape)")
    p.add_argument("--json", action="store_true", help="print one JSON line per case")
    p.set_defaults(func=run)


def gradcheck_rows(names=None, family=None):
    """Yield one result dict per (op, sample) of the registry."""
    import numpy as np

    from tinyllm.gradcheck import gradcheck_report
    from tinyllm.registry import all_ops

    ops = all_ops()
    unknown = set(names or ()) - set(ops)
    if unknown:
        raise SystemExit(f"tinyllm gradcheck: unknown ops {sorted(unknown)}; known: {sorted(ops)}")
    for name, info in sorted(ops.items()):
        if names and name not in names or family and info.family != family:
            continue
        for k, sample in enumerate(info.samples(np.random.default_rng(0), np.float64)):
            args = info.tensors(sample)
            if not any(getattr(a, "requires_grad", False) for a in args):
                continue
            t0 = time.perf_counter()
            report = gradcheck_report(
                lambda *xs, _info=info, _s=sample: _info.op(*xs, **_s.kwargs),
                args,
                atol=info.gradcheck_atol,
                rtol=info.gradcheck_rtol,
            )
            report.update(op=name, case=sample.name or str(k), seconds=time.perf_counter() - t0)
            yield report


def run(args) -> int:
    failures = total = 0
    if not args.json:
        print(f"{'op':<22} {'case':<34} {'max abs err':>12} {'max rel err':>12}  result")
        print("-" * 90)
    for row in gradcheck_rows(args.ops, args.family):
        total += 1
        failures += not row["passed"]
        if args.json:
            print(json.dumps(row))
        else:
            verdict = "pass" if row["passed"] else "FAIL"
            print(
                f"{row['op']:<22} {row['case'][:34]:<34} {row['max_abs_error']:>12.2e} "
                f"{row['max_rel_error']:>12.2e}  {verdict}"
            )
        sys.stdout.flush()
    if not args.json:
        print("-" * 90)
        print(f"{total - failures} passed, {failures} failed")
    return 1 if failures else 0
