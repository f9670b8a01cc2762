"""Profile the consumer and the embedded MongoDB-wire server under a steady event load (py-spy).

Run: ``.venv/bin/python bench/profile_ingest.py [--rate 500] [--seconds 15]`` (needs py-spy:
``.venv/bin/pip install py-spy``).  Prints the functions where
each process spends its samples (self and inclusive) and keeps the collapsed stacks in
bench/results/.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psutil

from bench.common import FLOWER_VENV, RESULTS, ROOT, Mongo, our_stack, start_ours, workdir
from bench.publisher import Publisher


def summarize(path: Path, top: int = 25) -> str:
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    out = [f"{path.name}: {total} samples", "  self:"]
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out.append("  inclusive:")
    out += [f"    {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=int, default=15)
    args = parser.parse_args()
    base = workdir()
    mongo = Mongo(base)
    stack = our_stack(base, mongo.url, 12)
    start_ours(stack, serve=False)
    spy = next(
        (str(p) for p in (ROOT / ".venv/bin/py-spy", FLOWER_VENV / "bin/py-spy") if p.exists()),
        shutil.which("py-spy"),
    )
    if spy is None:
        raise SystemExit("py-spy not found: .venv/bin/pip install py-spy")
    RESULTS.mkdir(parents=True, exist_ok=True)
    try:
        pub = Publisher(stack.broker_url, args.rate, args.rate * (args.seconds + 5))
        time.sleep(3)
        outs = {"ingest": RESULTS / "profile-ingest.txt", "mongo": RESULTS / "profile-nx27017.txt"}
        pids = {"ingest": stack.procs["ingest"].pid, "mongo": mongo.proc.pid}
        procs = {
            "consumer": psutil.Process(stack.procs["ingest"].pid),
            "db server": psutil.Process(mongo.proc.pid),
            "publisher": psutil.Process(pub.proc.pid),
        }
        before = {k: sum(p.cpu_times()[:2]) for k, p in procs.items()}
        t0 = time.monotonic()
        spies = [
            subprocess.Popen(
                [
                    spy,
                    "record",
                    "-r",
                    "200",
                    "-d",
                    str(args.seconds),
                    "--format",
                    "raw",
                    "-t",
                    "--gil",  # samples where the thread holds the GIL: where the CPU goes
                    "--nonblocking",  # without pausing the process (which would slow it)
                    "-o",
                    str(outs[k]),
                    "-p",
                    str(pids[k]),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for k in outs
        ]
        for s in spies:
            s.wait()
        elapsed = time.monotonic() - t0
        busy = {k: (sum(p.cpu_times()[:2]) - before[k]) / elapsed for k, p in procs.items()}
        pub.stop()
        print("CPU, cores busy: " + ", ".join(f"{k} {v:.2f}" for k, v in busy.items()))
        for path in outs.values():
            if path.exists():
                print(summarize(path))
    finally:
        stack.close()
        mongo.close()


if __name__ == "__main__":
    main()
