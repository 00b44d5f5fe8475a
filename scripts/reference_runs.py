"""Reference runs: how far CPUs' kernels move a run, and the fixture the tests compare with.

    python scripts/reference_runs.py --spread          # train the cases under every kernel set
    python scripts/reference_runs.py --spread --record # ... and rewrite tests/fixtures/

NumPy and OpenBLAS pick SIMD kernels by CPU (float64 tanh is AVX-512 code on one machine and
AVX2 or scalar code on another; OpenBLAS's gemm kernels differ per core type), so the last bits
of a sum differ between machines, and a training run carries the difference into every later
step. This script trains the reference cases natively and under environment variables that
make this machine run other kernels (`KERNEL_SETS`), and prints, per case and run length, the
largest difference from the native run (scale-free: max |a - b| / max |b| over each array).

`--record` writes the native arrays of every case at `RECORD_STEPS` to
tests/fixtures/reference_runs.npz and the measured spread, the tolerance the test applies and
where they were made to tests/fixtures/reference_runs.json. A real change of the numbers (the
`sensitivity` rows: the same run with lr 0.1% higher) must stay far outside that tolerance,
which is why the recorded runs are short: chaos grows rounding and real changes alike, and at
a short length the two stay orders of magnitude apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
FIXTURE_NPZ = ROOT / "tests" / "fixtures" / "reference_runs.npz"
FIXTURE_JSON = ROOT / "tests" / "fixtures" / "reference_runs.json"

# The cases: SGD + momentum with tanh (the default run) and Adam with identity + relu at B = 3.
CASES = {
    "sgd_tanh_seed7": {"seed": 7},
    "adam_identity_relu_b3": {
        "activation": "relu",
        "batch_size": 3,
        "init": {"name": "identity", "path": None, "scale": 1.0},
        "optim": {"name": "adam", "beta1": 0.9, "beta2": 0.999, "eps": 1e-08},
        "seed": 7,
    },
}
LENGTHS = (100, 300, 1000, 2000)
RECORD_STEPS = 300
# Arrays compared: the parameters, the carried hidden state and the optimiser's state.
COMPARED_PREFIXES = ("W_xh", "W_hh", "W_hy", "b_h", "b_y", "h", "optim.")
# The issue's feature names do not switch NumPy 2.4's AVX-512 dispatch off; X86_V4 does.
AVX512_NAMES = "AVX512F AVX512CD AVX512_SKX AVX512_CLX AVX512_CNL AVX512_ICL AVX512_SPR"
KERNEL_SETS = {
    "native": {},
    "openblas-haswell": {"OPENBLAS_CORETYPE": "Haswell"},
    "avx2 (numpy X86_V3, openblas Haswell)": {
        "OPENBLAS_CORETYPE": "Haswell",
        "NPY_DISABLE_CPU_FEATURES": f"X86_V4 {AVX512_NAMES}",
    },
    "sse4 (numpy baseline, openblas Nehalem)": {
        "OPENBLAS_CORETYPE": "Nehalem",
        "NPY_DISABLE_CPU_FEATURES": "X86_V3 X86_V4",
    },
}
# The test's tolerance is this many times the largest spread measured at RECORD_STEPS.
HEADROOM = 100.0


def train_case(settings: dict, steps: int, run_dir: Path) -> dict[str, np.ndarray]:
    """Train one case for `steps` steps; its compared checkpoint arrays and final loss."""
    from rnn_lab.run.rundir import CHECKPOINT_FILE
    from rnn_lab.run.settings import TrainSettings
    from rnn_lab.run.trainer import train

    s = TrainSettings(analyze=False, plots=False, log_interval=0, steps=steps, **settings)
    summary = train(s, run_dir)
    with np.load(run_dir / CHECKPOINT_FILE, allow_pickle=False) as z:
        out = {k: z[k].copy() for k in z.files if k.startswith(COMPARED_PREFIXES)}
    out["final_loss"] = np.float64(summary["final_loss"])
    out["status_ok"] = np.bool_(summary["status"] == "ok")
    return out


def relative_spread(a: dict, b: dict) -> float:
    """The largest over arrays of max |a - b| / max |b| (0 when bit-identical)."""
    worst = 0.0
    for key in b:
        if key == "status_ok":
            continue
        x, y = np.asarray(a[key], dtype=np.float64), np.asarray(b[key], dtype=np.float64)
        scale = float(np.max(np.abs(y))) if y.size else 0.0
        if y.size and scale > 0:
            worst = max(worst, float(np.max(np.abs(x - y))) / scale)
    return worst


def recorded() -> tuple[dict, dict[str, dict[str, np.ndarray]]]:
    """The fixture: its JSON record and each case's recorded arrays."""
    record = json.loads(FIXTURE_JSON.read_text())
    arrays: dict[str, dict[str, np.ndarray]] = {name: {} for name in record["cases"]}
    with np.load(FIXTURE_NPZ, allow_pickle=False) as z:
        for key in z.files:
            name, array = key.split("/", 1)
            arrays[name][array] = z[key]
    return record, arrays


def check() -> int:
    """Train every recorded case here; 0 when each is within the recorded tolerance."""
    record, arrays = recorded()
    failed = 0
    for name, settings in record["cases"].items():
        with tempfile.TemporaryDirectory() as tmp:
            got = train_case(settings, record["steps"], Path(tmp))
        spread = relative_spread(got, arrays[name])
        ok = bool(got["status_ok"]) and spread <= record["tolerance"]
        failed += not ok
        print(
            f"{name}: {spread:.2e} from the recorded run (tolerance "
            f"{record['tolerance']:.1e}): {'ok' if ok else 'MOVED'}"
        )
    return 1 if failed else 0


def _worker(out_dir: Path, sensitivity: bool) -> None:
    for name, settings in CASES.items():
        for steps in LENGTHS:
            with tempfile.TemporaryDirectory() as tmp:
                arrays = train_case(settings, steps, Path(tmp))
            np.savez(out_dir / f"{name}@{steps}.npz", **arrays)
            if sensitivity:  # the same run with lr 0.1% higher: what a real change does
                changed = dict(settings, lr=0.01 * 1.001)
                with tempfile.TemporaryDirectory() as tmp:
                    arrays = train_case(changed, steps, Path(tmp))
                np.savez(out_dir / f"{name}@{steps}+lr.npz", **arrays)


def _load(path: Path) -> dict:
    with np.load(path) as z:
        return {k: z[k] for k in z.files}


def _run_kernel_sets(tmp: Path) -> dict[str, Path]:
    dirs = {}
    for i, (label, extra) in enumerate(KERNEL_SETS.items()):
        out = tmp / f"set{i}"
        out.mkdir()
        env = {**os.environ, **extra}
        cmd = [sys.executable, __file__, "--worker", str(out)]
        if label == "native":
            cmd.append("--sensitivity")
        print(f"training the cases: {label} {extra or ''}", flush=True)
        subprocess.run(cmd, env=env, check=True)
        dirs[label] = out
    return dirs


def measure() -> tuple[dict, dict, Path]:
    """Train under every kernel set: {case: {steps: {label: spread}}}, sensitivity, native."""
    tmp = Path(tempfile.mkdtemp(prefix="reference_runs-"))
    dirs = _run_kernel_sets(tmp)
    native = dirs["native"]
    spread: dict = {}
    sensitivity: dict = {}
    for name in CASES:
        for steps in LENGTHS:
            ref = _load(native / f"{name}@{steps}.npz")
            row = spread.setdefault(name, {}).setdefault(steps, {})
            for label, d in dirs.items():
                if label != "native":
                    row[label] = relative_spread(_load(d / f"{name}@{steps}.npz"), ref)
            changed = _load(native / f"{name}@{steps}+lr.npz")
            sensitivity.setdefault(name, {})[steps] = relative_spread(changed, ref)
    return spread, sensitivity, native


def _print(spread: dict, sensitivity: dict) -> None:
    labels = [k for k in KERNEL_SETS if k != "native"]
    print("\nlargest relative difference from the native run (max |a-b| / max |b|):")
    print(f"{'case':24s} {'steps':>6s} " + " ".join(f"{lb[:22]:>22s}" for lb in labels), end="")
    print(f" {'lr +0.1% (real change)':>24s}")
    for name, by_steps in spread.items():
        for steps, row in by_steps.items():
            cells = " ".join(f"{row[lb]:22.2e}" for lb in labels)
            print(f"{name:24s} {steps:6d} {cells} {sensitivity[name][steps]:24.2e}")


def record(spread: dict, sensitivity: dict, native: Path) -> None:
    """Write the fixture: native arrays at RECORD_STEPS, the spread and the tolerance."""
    from rnn_lab.provenance import git_commit, machine_line
    from rnn_lab.run.rundir import atomic_write_json, atomic_write_npz

    worst = max(v for by_steps in spread.values() for v in by_steps[RECORD_STEPS].values())
    tolerance = max(HEADROOM * worst, 1e-12)
    smallest_real = min(v[RECORD_STEPS] for v in sensitivity.values())
    arrays = {}
    for name in CASES:
        for key, value in _load(native / f"{name}@{RECORD_STEPS}.npz").items():
            arrays[f"{name}/{key}"] = value
    atomic_write_npz(FIXTURE_NPZ, arrays)
    atomic_write_json(
        FIXTURE_JSON,
        {
            "cases": CASES,
            "steps": RECORD_STEPS,
            "tolerance": tolerance,
            "measured_spread": {n: spread[n][RECORD_STEPS] for n in CASES},
            "real_change_lr_plus_0.1pct": {n: sensitivity[n][RECORD_STEPS] for n in CASES},
            "spread_by_length": spread,
            "made_by": "python scripts/reference_runs.py --spread --record",
            "commit": git_commit(ROOT),
            "machine": machine_line(),
        },
    )
    print(
        f"\nrecorded {FIXTURE_NPZ.name} at {RECORD_STEPS} steps: tolerance {tolerance:.1e} "
        f"({HEADROOM:.0f}x the largest spread {worst:.1e}); a 0.1% lr change moves "
        f"{smallest_real:.1e} ({smallest_real / tolerance:.0f}x the tolerance)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spread", action="store_true", help="measure under every kernel set")
    parser.add_argument("--record", action="store_true", help="also rewrite tests/fixtures/")
    parser.add_argument("--check", action="store_true", help="train the recorded cases here")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--sensitivity", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.sensitivity)
        return 0
    if args.check:
        return check()
    if not args.spread:
        parser.print_help()
        return 2
    spread, sensitivity, native = measure()
    _print(spread, sensitivity)
    if args.record:
        record(spread, sensitivity, native)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
