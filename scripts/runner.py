"""Runs the jobs scripts/reproduce.py plans: one job = train.py once, then eval.py's commands, its
numbers stored as result.json in the run folder (a job with one is not run again).

In-process jobs (the built-in data) call train.main and eval.main in a pool of single-threaded
processes (or inline with one job), which spares a Python and torch start-up per run on a CPU;
subprocess jobs (real data) run `torchrun ... train.py` and `python eval.py` with the same arguments.
"""
import concurrent.futures as futures
import json
import multiprocessing
import subprocess
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def metrics_from(run_dir: Path) -> dict:
    """Zero-shot / probe top-1 and retrieval R@1 (mean of both directions) from a run's eval JSON files."""
    merged = {}
    for path in sorted(run_dir.glob("eval-*.json")):
        merged.update(json.loads(path.read_text()))
    first = lambda task: next(iter(merged.get(task, {}).values()), {})
    i2t, t2i = first("retrieval").get("image_to_text_R@1"), first("retrieval").get("text_to_image_R@1")
    return {"zeroshot": first("zeroshot").get("top1"), "probe": first("linear-probe").get("top1"),
            "retrieval": (i2t + t2i) / 2 if i2t is not None and t2i is not None else None, "i2t": i2t, "t2i": t2i}


# --- execution ------------------------------------------------------------------------------------------------

def init_worker(threads: int):
    torch.set_num_threads(threads)


def execute(job: dict) -> dict:
    """Train, then run the eval.py commands; returns (and stores as result.json) the run's metrics.

    In-process (micro): train.main and eval.main in this process, console output to console.log.
    Subprocess (real): torchrun train.py, then python eval.py, same arguments."""
    run_dir = Path(job["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    start, cpu_start, result = time.perf_counter(), time.process_time(), {"run_id": run_dir.name}
    try:
        with open(run_dir / "console.log", "a") as log:
            if job["inprocess"]:
                import eval as evaluate
                import train
                with redirect_stdout(log), redirect_stderr(log):
                    if job["train"]:
                        train.main(job["train"])
                    result["train_s"] = round(time.perf_counter() - start, 2)
                    for _, argv in job["evals"]:
                        evaluate.main(argv)
            else:
                if job["train"]:
                    subprocess.run(job["launcher"] + ["train.py"] + job["train"], cwd=ROOT, stdout=log, stderr=log,
                                   check=True)
                result["train_s"] = round(time.perf_counter() - start, 2)
                for _, argv in job["evals"]:
                    subprocess.run([sys.executable, "eval.py"] + argv, cwd=ROOT, stdout=log, stderr=log, check=True)
    except (Exception, SystemExit) as error:  # one failed run is reported, not fatal to the others
        result["error"] = f"{type(error).__name__}: {error} (see {run_dir / 'console.log'})"
        return result
    # CPU time of this process (in-process jobs): the wall time the run would take on an idle core
    result.update(metrics_from(run_dir), wall_s=round(time.perf_counter() - start, 2),
                  cpu_s=round(time.process_time() - cpu_start, 2))
    (run_dir / "result.json").write_text(json.dumps(result, indent=1))
    if job.get("drop_checkpoint"):  # the numbers are kept; a micro checkpoint is ~20 MB, mostly token embeddings
        (run_dir / "ckpt.pt").unlink(missing_ok=True)
    return result


class InlineExecutor:
    """futures.Executor's submit, run at once in this process (--jobs 1: no process start-up)."""

    def submit(self, fn, *args):
        future = futures.Future()
        future.set_result(fn(*args))
        return future

    def shutdown(self, wait=True):
        pass


def run_jobs(scorer, pending, jobs, threads, start):
    """Run every job (skipping those already done); the quality runs wait for the scorer's scores."""
    results = {}
    for run_id, job in list(pending.items()):
        done = Path(job["run_dir"]) / "result.json"
        if done.exists():
            results[run_id] = json.loads(done.read_text())
            del pending[run_id]
    if jobs == 1:
        torch.set_num_threads(threads)
        executor = InlineExecutor()
    else:
        executor = futures.ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                                               initializer=init_worker, initargs=(threads,))
    held = {k: j for k, j in pending.items() if j["quality"]}
    order = sorted((k for k in pending if k not in held), key=lambda k: -pending[k]["cost"])  # longest first
    running = {}
    if scorer and not (Path(scorer["run_dir"]) / "result.json").exists():
        running[executor.submit(execute, scorer)] = "scorer"
    else:
        order += list(held)
        held = {}
    for run_id in order:
        running[executor.submit(execute, pending[run_id])] = run_id
    count, total = 0, len(pending) + ("scorer" in running.values())
    try:
        while running:
            done, _ = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in done:
                run_id, result = running.pop(future), future.result()
                count += 1
                metrics = " ".join(f"{k}={result[k]:.3f}" for k in ("zeroshot", "probe", "retrieval") if result.get(k) is not None)
                print(f"[{count}/{total} {(time.perf_counter() - start) / 60:5.1f} min] {run_id} "
                      f"{result.get('error') or metrics} ({result.get('wall_s', 0):.0f} s)", flush=True)
                if run_id == "scorer":
                    for quality_id in held:
                        running[executor.submit(execute, held[quality_id])] = quality_id
                else:
                    results[run_id] = result
    finally:
        executor.shutdown(wait=True)
    return results
