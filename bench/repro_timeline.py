"""Where a `dvc repro`'s wall time goes, stage by stage: DVC before the stage's process, the process's
start (imports, params, data, models) up to the training loop, the loop's set-up, its steps, what
follows the last step (scores, delivery, exit), and DVC after (hashing, caching, the lock file).

    python bench/repro_timeline.py                   # runs `dvc repro -f` here and prints the table
    python bench/repro_timeline.py -- train_rfdn     # arguments after -- go to dvc repro (here: -f train_rfdn)

The training checkpoints are set aside for the run (a forced rerun would resume each finished one and
take no steps) and put back after.

It runs the repro itself and reads it from outside, changing nothing in the stages:
- DVC's output, each segment (lines, and tqdm's carriage-return redraws) timestamped as it arrives:
  DVC's "Running stage 'x'", the loop's first line "[x] N processes ...", its progress bar's first
  draw (0 steps: the set-up is done) and its draw at the last step;
- the stage's process (``python -m pipeline.launch`` / ``python -m stages.x``), its start and end seen
  by polling DVC's children every 20 ms. DVC's share of a stage is the time between the previous
  stage's process ending and this one's starting (DVC checks, hashes and caches there).

A stage without a training loop (data preparation, ``classify_patches``, ``evaluate``) has no
loop columns: its whole process counts as start-up. The table's total is the repro's wall time; the
numbers are one repro's on this machine (noisy: compare columns, not single seconds).
"""
from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RUNNING = re.compile(r"Running stage '([^']+)'")
LOOP = re.compile(r"^\[([^\]]+)\] \d+ processes \(")
BAR = re.compile(r"^(\S+?):\s+\d+%\|.*?\|\s*(\d+)/(\d+)")


@dataclass
class Stage:
    name: str
    dvc_start: float
    proc_start: float = 0.0
    proc_end: float = 0.0
    loop: dict = field(default_factory=dict)  # loop name -> {"begin", "ready", "done"}


def watch_processes(root: psutil.Process, seen: dict, stop: threading.Event):
    """{pid: [first seen, last seen, parent pid]} of every stage process under ``root`` (times on this
    clock: psutil's create_time is whole-second boot time plus ticks, off by up to a second)."""
    while not stop.is_set():
        try:
            for p in root.children(recursive=True):
                try:
                    cmd = " ".join(p.cmdline())
                    if "pipeline.launch" in cmd or " -m stages." in cmd:  # a stage's process, a rank, a worker
                        seen.setdefault(p.pid, [time.time(), time.time(), p.ppid()])[1] = time.time()
                except psutil.Error:
                    pass
        except psutil.Error:
            return
        time.sleep(0.02)


def run(args: list[str]) -> tuple[list[Stage], float, float]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    start = time.time()
    proc = subprocess.Popen(["dvc", "repro", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    seen, stop = {}, threading.Event()
    watcher = threading.Thread(target=watch_processes, args=(psutil.Process(proc.pid), seen, stop), daemon=True)
    watcher.start()
    stages: list[Stage] = []
    buf = b""
    while True:
        chunk = proc.stdout.read1(65536) if hasattr(proc.stdout, "read1") else proc.stdout.read(1)
        if not chunk:
            break
        now = time.time()
        sys.stdout.buffer.write(chunk)
        buf += chunk
        *segments, buf = re.split(rb"[\r\n]", buf)
        for seg in segments:
            text = seg.decode(errors="replace").strip()
            if m := RUNNING.search(text):
                stages.append(Stage(m.group(1), now))
            elif stages and (m := LOOP.match(text)):
                stages[-1].loop.setdefault(m.group(1), {"begin": now})
            elif stages and (m := BAR.match(text)) and m.group(1) in stages[-1].loop:  # the loop's bar
                loop = stages[-1].loop[m.group(1)]
                done, total = int(m.group(2)), int(m.group(3))
                loop.setdefault("ready", now)  # the bar's first draw: set-up done, the first step starts
                if done == total:
                    loop.setdefault("done", now)
    proc.wait()
    end = time.time()
    stop.set()
    watcher.join()
    # a stage's own process: not a child of another stage process (its ranks, its forked loader workers)
    launchers = sorted(v[:2] for v in seen.values() if v[2] not in seen)
    for s in stages:  # each stage's process: the first seen after DVC announced the stage
        mine = [p for p in launchers if p[0] >= s.dvc_start]
        if mine:
            s.proc_start, s.proc_end = mine[0]
            launchers.remove(mine[0])
    if proc.returncode:
        sys.exit(f"dvc repro exited {proc.returncode}")
    return stages, start, end - start


def table(stages: list[Stage], start: float, wall: float) -> str:
    """A row per stage: DVC between the previous stage's process and this one's (its checks, hashing,
    caching and lock file), then this process's start-up, loop set-up, steps and what follows them."""
    cols = ["DVC before", "start-up", "loop set-up", "steps", "after last step"]
    rows, totals, outside = [], [0.0] * len(cols), []
    previous_end = start
    for s in (s for s in stages if s.proc_start):
        begin = min((v["begin"] for v in s.loop.values()), default=None)
        ready = min((v.get("ready", v["begin"]) for v in s.loop.values()), default=None)
        done = max((v.get("done", v.get("ready", v["begin"])) for v in s.loop.values()), default=None)
        if begin is None:  # no training loop: the whole process is start-up
            cells = [s.proc_start - previous_end, s.proc_end - s.proc_start, 0.0, 0.0, 0.0]
        else:
            cells = [s.proc_start - previous_end, begin - s.proc_start, ready - begin, done - ready, s.proc_end - done]
        previous_end = s.proc_end
        totals = [a + b for a, b in zip(totals, cells)]
        outside.append(sum(cells) - cells[3])
        rows.append(f"| {s.name} | " + " | ".join(f"{c:.1f}" for c in cells) + f" | {sum(cells):.1f} |")
    tail = start + wall - previous_end  # DVC after the last stage
    head = "| stage | " + " | ".join(cols) + " | total |\n|" + "---|" * (len(cols) + 2)
    foot = (f"| **sum** | " + " | ".join(f"**{t:.1f}**" for t in totals) + f" | **{sum(totals):.1f}** |\n\n"
            f"repro wall time {wall:.1f} s (DVC after the last stage {tail:.1f} s); the steps {totals[3]:.1f} s; "
            f"outside them {wall - totals[3]:.1f} s; the median stage spends {statistics.median(outside):.1f} s "
            f"outside its steps")
    return "\n".join([head, *rows, foot])


def main():
    args = sys.argv[1:]
    args = ["-f", *args[args.index("--") + 1:]] if "--" in args else ["-f"]
    # a forced rerun would resume each finished checkpoint (no steps): set them aside, put them back after
    aside = Path(f"checkpoints.before-bench-{int(time.time())}")
    if Path("checkpoints").exists():
        Path("checkpoints").rename(aside)
    try:
        stages, start, wall = run(args)
    finally:
        if aside.exists():
            shutil.rmtree("checkpoints", ignore_errors=True)
            aside.rename("checkpoints")
    if os.environ.get("TIMELINE_DEBUG"):
        t0 = stages[0].dvc_start if stages else 0
        for s in stages:
            print(s.name, round(s.dvc_start - t0, 2), round(s.proc_start - t0, 2), round(s.proc_end - t0, 2),
                  {k: {e: round(t - t0, 2) for e, t in v.items()} for k, v in s.loop.items()})
    print("\n" + table(stages, start, wall))


if __name__ == "__main__":
    main()
