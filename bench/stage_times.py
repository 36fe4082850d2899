"""Each stage's own time in a `dvc repro`, read from its MLflow runs, and two repros side by side.

    python bench/stage_times.py                      # the newest run of each stage in ./mlflow.db
    python bench/stage_times.py BEFORE AFTER         # two commits' repros (their runs' git_commit tag),
                                                     # stage by stage, with the ratio of the totals
    python bench/stage_times.py BEFORE A1,A2         # a side may list commits: a repro that reran only
                                                     # some stages at A2 counts the others' runs at A1
    python bench/stage_times.py 'C<2026-12-02T12:49' 'C>2026-12-02T12:49'
                                                     # one commit's runs before / after a time (UTC): a
                                                     # repro of uncommitted edits is tagged with HEAD

A stage's time is its MLflow run's end - start (the training loop, the deliverable, its evaluation:
not Python's start-up or DVC's hashing), the newest finished top-level run per stage name and commit.
The sum is what the issue's "stage time" target counts; `dvc repro` wall time adds DVC and start-up.
A stage of one commit missing from the other (e.g. a control added) counts in its own total only.
"""
from __future__ import annotations

import argparse
import os


def stage_seconds(store: str, commits: str | None) -> dict[str, float]:
    """{stage: seconds} of the newest finished top-level run per stage (of ``commits``, comma-separated
    prefixes, if given: a stage's run at a later-listed commit replaces its run at an earlier one)."""
    if commits and "," in commits:
        out = {}
        for commit in commits.split(","):
            out.update(stage_seconds(store, commit))
        return out
    commit, bound = commits, None
    if commits and ("<" in commits or ">" in commits):
        op = "<" if "<" in commits else ">"
        commit, when = commits.split(op)
        from datetime import datetime, timezone

        millis = datetime.fromisoformat(when).replace(tzinfo=timezone.utc).timestamp() * 1000
        bound = (op, millis)
    import mlflow

    client = mlflow.MlflowClient(store)
    experiment = client.get_experiment_by_name("sr-pipeline")
    if experiment is None:
        raise SystemExit(f"no 'sr-pipeline' experiment in {store}")
    query = "attributes.status = 'FINISHED'" + (f" and tags.git_commit LIKE '{commit}%'" if commit else "")
    out = {}
    for run in client.search_runs([experiment.experiment_id], query, order_by=["attributes.start_time DESC"],
                                  max_results=5000):
        tags = run.data.tags
        stage = tags.get("stage")
        if bound and (run.info.start_time < bound[1]) != (bound[0] == "<"):
            continue
        if stage and "mlflow.parentRunId" not in tags and stage not in out and run.info.end_time:
            out[stage] = (run.info.end_time - run.info.start_time) / 1000
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("commits", nargs="*", help="none (newest runs), or BEFORE AFTER (commit prefixes)")
    ap.add_argument("--store", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db"))
    args = ap.parse_args()
    if len(args.commits) not in (0, 2):
        ap.error("give no commit or two (BEFORE AFTER)")
    if not args.commits:
        times = stage_seconds(args.store, None)
        for stage, s in sorted(times.items(), key=lambda kv: -kv[1]):
            print(f"{stage:28s} {s:8.1f} s")
        print(f"{'total':28s} {sum(times.values()):8.1f} s")
        return
    before, after = (stage_seconds(args.store, c) for c in args.commits)
    if not before or not after:
        raise SystemExit(f"no finished runs for {args.commits[0] if not before else args.commits[1]} in {args.store}")
    print(f"{'stage':28s} {args.commits[0][:10]:>10s} {args.commits[1][:10]:>10s}   after/before")
    for stage in sorted(set(before) | set(after), key=lambda s: -max(before.get(s, 0), after.get(s, 0))):
        b, a = before.get(stage), after.get(stage)
        ratio = f"{a / b:6.2f}" if a and b else "     -"
        print(f"{stage:28s} {b or 0:9.1f}s {a or 0:9.1f}s   {ratio}")
    tb, ta = sum(before.values()), sum(after.values())
    print(f"{'total':28s} {tb:9.1f}s {ta:9.1f}s   {ta / tb:6.2f}")


if __name__ == "__main__":
    main()
