"""The job graph after SFT: dependencies respected, the same results in one process or two, errors reported."""

import json
from dataclasses import replace
from pathlib import Path

import pytest

from alignkit.config import RunConfig
from alignkit.errors import AlignkitError
from alignkit.pipeline import Context, Job, run_jobs


def _write(ctx, stage_dir: Path, resume: bool, value: int, needs: tuple = ()) -> dict:
    """A stand-in stage: checks its inputs are finished, then writes a file and returns a summary."""
    for name in needs:
        assert (ctx.run_dir / name / "summary.json").is_file(), f"{name} not finished before {stage_dir.name}"
    (stage_dir / "out.txt").write_text(str(value))
    return {"value": value}


def _fail(ctx, stage_dir: Path, resume: bool) -> dict:
    raise AlignkitError("bad input in this stage")


def _jobs() -> list[Job]:
    return [Job("a", "fa", _write, {"value": 1}),
            Job("b", "fb", _write, {"value": 2, "needs": ("a",)}, deps=("a",)),
            Job("c", "fc", _write, {"value": 3}),
            Job("d", "fd", _write, {"value": 4, "needs": ("b", "c")}, deps=("b", "c"))]


def _bars(ctx, stage_dir: Path, resume: bool) -> dict:
    from transformers.utils import logging as hf_logging

    return {"bars": hf_logging.is_progress_bar_enabled()}


@pytest.mark.parametrize("workers", [1, 2])
def test_jobs_run_after_their_inputs_in_one_or_two_processes(tmp_path, workers):
    results = run_jobs(Context(RunConfig(), tmp_path), _jobs() + [Job("bars", "fe", _bars)], workers)
    assert {k: v.get("value") for k, v in results.items()} == {"a": 1, "b": 2, "c": 3, "d": 4, "bars": None}
    if workers == 2:  # transformers' per-file bars are off in the workers, as the command line turns them off
        assert results["bars"]["bars"] is False
    assert json.loads((tmp_path / "d" / "summary.json").read_text())["fingerprint"] == "fd"


def test_a_finished_job_is_skipped_the_next_time(tmp_path):
    ctx = Context(RunConfig(), tmp_path)
    run_jobs(ctx, _jobs(), 1)
    (tmp_path / "a" / "out.txt").write_text("kept")
    run_jobs(ctx, _jobs(), 2)
    assert (tmp_path / "a" / "out.txt").read_text() == "kept"


def test_an_error_in_a_worker_reaches_the_caller_and_finished_jobs_stay(tmp_path):
    jobs = [Job("a", "fa", _write, {"value": 1}), Job("bad", "fx", _fail, deps=("a",))]
    with pytest.raises(AlignkitError, match="bad input in this stage"):
        run_jobs(Context(RunConfig(), tmp_path), jobs, 2)
    assert (tmp_path / "a" / "summary.json").is_file()
    assert not (tmp_path / "bad" / "summary.json").exists()


def test_another_alignkit_version_makes_a_stage_again(tmp_path, monkeypatch):
    import alignkit
    from alignkit.pipeline import fingerprint, run_stage

    calls = []

    def stage(d):
        calls.append(alignkit.__version__)
        return {"n": len(calls)}

    fp = fingerprint({"lr": 1e-3}, "input")
    run_stage(tmp_path / "s", fp, stage)
    assert run_stage(tmp_path / "s", fingerprint({"lr": 1e-3}, "input"), stage)["n"] == 1  # unchanged: skipped
    monkeypatch.setattr(alignkit, "__version__", alignkit.__version__ + ".post1")
    new = fingerprint({"lr": 1e-3}, "input")
    assert new != fp
    assert run_stage(tmp_path / "s", new, stage)["n"] == 2 and len(calls) == 2


def test_a_stage_is_finished_only_when_the_pipeline_wrote_its_summary(tmp_path):
    """A policy stage writes summary.json when training ends, before the job evaluates it: a job
    interrupted then is run again (resumed), not skipped without its evaluation."""
    from alignkit.pipeline import finished

    stage = tmp_path / "dpo"
    stage.mkdir()
    (stage / ".fingerprint").write_text("abc\n")
    (stage / "summary.json").write_text(json.dumps({"steps": 4}))  # the stage's own summary
    assert finished(stage, "abc") is None
    (stage / "summary.json").write_text(json.dumps({"steps": 4, "eval": {}, "fingerprint": "abc"}))
    assert finished(stage, "abc")["eval"] == {}
    assert finished(stage, "other") is None


def test_display_keys_do_not_change_a_stages_fingerprint():
    from alignkit.config import BonConfig, EvalConfig
    from alignkit.pipeline import _identity

    run = Path("runs/demo")
    quiet, shown = BonConfig(eval=EvalConfig(progress=False)), BonConfig(eval=EvalConfig(progress=True))
    assert _identity(quiet, run) == _identity(shown, run)
    assert _identity(EvalConfig(progress=False), run) == _identity(EvalConfig(progress=True), run)
    assert _identity(BonConfig(n=[1, 2]), run) != _identity(quiet, run)


def test_a_copied_or_renamed_run_keeps_its_stages_fingerprints(tmp_path):
    """Paths inside the run folder count relative to it; a path outside it counts as written."""
    from alignkit.pipeline import plan

    cfg = RunConfig()
    fps = [{job.name: job.fp for job in plan(cfg, tmp_path / name, "w", "s")} for name in ("demo", "copy")]
    assert fps[0] == fps[1] and len(fps[0]) > 10
    # a reference model in the first run's folder: the first run's own, another model for the copy
    ref = replace(cfg, dpo=replace(cfg.dpo, ref_model=str(tmp_path / "demo" / "sft" / "model")))
    own, other = ({job.name: job.fp for job in plan(ref, tmp_path / name, "w", "s")} for name in ("demo", "copy"))
    assert own["dpo"] != other["dpo"] and own["ppo"] == other["ppo"]


def test_a_second_run_into_the_same_folder_is_refused(tmp_path):
    import os

    from alignkit.pipeline import run_lock

    with run_lock(tmp_path):
        with pytest.raises(AlignkitError, match=rf"in use by another alignkit run \(process [^:]+:{os.getpid()}\)"):
            with run_lock(tmp_path):
                pass
    with run_lock(tmp_path):  # free again once the first has ended
        pass


def test_a_file_system_without_locks_runs_unlocked(tmp_path, monkeypatch):
    import errno
    import fcntl

    from alignkit.pipeline import run_lock

    def no_locks(f, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with run_lock(tmp_path, wait_workers_s=0.1):  # not "in use by another alignkit run"
        pass


def test_a_run_waits_for_the_workers_of_a_killed_run(tmp_path):
    from alignkit.pipeline import WORKERS_LOCK, _flock, run_lock

    worker = _flock(tmp_path / WORKERS_LOCK, shared=True)  # a worker still alive
    with pytest.raises(AlignkitError, match="worker processes of an earlier alignkit run are still writing"):
        with run_lock(tmp_path, wait_workers_s=0.3):
            pass
    worker.close()  # it has stopped
    with run_lock(tmp_path, wait_workers_s=0.3):
        pass


def test_a_worker_ends_when_its_run_is_gone():
    from alignkit.pipeline import _watch_parent

    exits = []
    _watch_parent(-1, poll_s=0.01, exit_fn=exits.append)  # -1: never this process's parent
    assert exits == [1]


KILLED_RUN = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
import multiprocessing
from pathlib import Path
from alignkit.pipeline import _init_worker

if __name__ == "__main__":
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"), initializer=_init_worker,
                             initargs=(1, Path(sys.argv[1]), os.getpid())) as pool:
        print(pool.submit(os.getpid).result(), flush=True)
        pool.submit(time.sleep, 120)
        time.sleep(120)
"""


def test_the_workers_of_a_killed_run_stop(tmp_path):
    """`kill -9` of `alignkit run` (no handler sees it) leaves no worker writing into the run folder."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from alignkit.pipeline import run_lock

    script = tmp_path / "killed_run.py"
    script.write_text(KILLED_RUN)
    main = subprocess.Popen([sys.executable, str(script), str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            stderr=subprocess.DEVNULL)
    worker = int(main.stdout.readline())
    os.kill(main.pid, signal.SIGKILL)
    main.wait()
    t0 = time.monotonic()
    with run_lock(tmp_path, wait_workers_s=30):  # a rerun waits for the worker, not the full 30 s
        assert time.monotonic() - t0 < 10
    try:  # gone, or a zombie waiting for whichever process reaps orphans here
        state = Path(f"/proc/{worker}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z", "X")


def _prefs_dir(tmp_path, rows: dict[str, list[dict]]):
    """A preferences folder as `alignkit prefs` writes it: <name>.jsonl for each of ``rows``."""
    prefs = tmp_path / "prefs"
    prefs.mkdir()
    for name, records in rows.items():
        (prefs / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return prefs


def test_the_curves_pairs_are_one_comparison_per_prompt(tmp_path, monkeypatch):
    """rm_curve compares one pair per prompt with one ranking per prompt: later comparisons of the same
    prompt (prefs pairs_per_prompt) stay out of it."""
    from alignkit.config import RMConfig
    from alignkit.pipeline import _rm_curve
    from alignkit.stages import rm

    rows = {"rankings": [], "pairs": [], "labels": []}
    for n in range(4):
        p = f"Question {n}?"
        rows["rankings"].append({"prompt": p, "responses": ["a", "b", "c", "d"], "ranking": [0, 1, 2, 3]})
        rows["pairs"].append({"prompt": p, "chosen": "a", "rejected": "b", "meta": {"comparison": 1}})
        rows["pairs"].append({"prompt": p, "chosen": "c", "rejected": "d", "meta": {"comparison": 2}})
    rows["labels"].append({"prompt": "Question 0?", "responses": ["c", "d"], "label": "tie", "meta": {"comparison": 2}})
    prefs = _prefs_dir(tmp_path, rows)
    seen = {}

    def fake_rm(cfg, surprise_memo=None):
        seen[Path(cfg.out).name] = [json.loads(line) for line in open(cfg.data)]
        return {"heldout_accuracy": 0.5, "spearman_gold": 0.0, "train_seconds": 0.0}

    monkeypatch.setattr(rm, "run", fake_rm)
    _rm_curve(RunConfig(rm_curve=[4], rm_curve_seeds=1), RMConfig(), prefs, tmp_path / "curve")
    assert len(seen["pairs-4"]) == 4 and all(r["meta"]["comparison"] == 1 for r in seen["pairs-4"])
    assert len(seen["rankings-4"]) == 4


def test_the_curves_models_train_rm_curve_steps_or_epochs(tmp_path, monkeypatch):
    """rm_curve_steps gives every model of the curve the same optimizer steps; 0 leaves rm_curve_epochs."""
    from alignkit.config import RMConfig
    from alignkit.pipeline import _rm_curve
    from alignkit.stages import rm

    prefs = _prefs_dir(tmp_path, {
        "rankings": [{"prompt": f"Q{n}?", "responses": ["a", "b"], "ranking": [0, 1]} for n in range(4)],
        "pairs": [{"prompt": f"Q{n}?", "chosen": "a", "rejected": "b"} for n in range(4)],
        "labels": []})
    seen = []

    def fake_rm(cfg, surprise_memo=None):
        seen.append((cfg.max_steps, cfg.epochs, cfg.prior, cfg.objective))
        return {"heldout_accuracy": 0.5, "spearman_gold": 0.0, "train_seconds": 0.0}

    monkeypatch.setattr(rm, "run", fake_rm)
    rcfg = RMConfig(prior="sft", objective="all_pairs")
    _rm_curve(RunConfig(rm_curve=[2, 4], rm_curve_steps=150, rm_curve_seeds=1), rcfg, prefs, tmp_path / "a")
    assert seen == [(150, RunConfig().rm_curve_epochs, "sft", "all_pairs")] * 4
    seen.clear()
    _rm_curve(RunConfig(rm_curve=[4], rm_curve_epochs=2.5, rm_curve_seeds=1), rcfg, prefs, tmp_path / "b")
    assert seen == [(0, 2.5, "sft", "all_pairs")] * 2


def test_the_curve_averages_its_seeds_each_with_its_own_subsets(tmp_path, monkeypatch):
    """rm_curve_seeds trains every point once per seed (rm.seed on), each seed on its own nested subsets;
    a point is the mean over seeds with each seed's accuracy beside it, and the summary says how many
    ranked prompts reach the pairs' accuracy at the largest count."""
    from alignkit.config import RMConfig
    from alignkit.pipeline import _rm_curve
    from alignkit.stages import rm

    prefs = _prefs_dir(tmp_path, {
        "rankings": [{"prompt": f"Q{n}?", "responses": ["a", "b"], "ranking": [0, 1]} for n in range(8)],
        "pairs": [{"prompt": f"Q{n}?", "chosen": "a", "rejected": "b"} for n in range(8)],
        "labels": []})
    subsets = {}

    def fake_rm(cfg, surprise_memo=None):
        rows = [json.loads(line) for line in open(cfg.data)]
        subsets[Path(cfg.out).name] = {r["prompt"] for r in rows}
        bonus = 0.1 if "rankings" in cfg.data else 0.0
        return {"heldout_accuracy": 0.5 + len(rows) / 100 + bonus + cfg.seed / 100, "spearman_gold": 0.1,
                "train_seconds": 1.0}

    monkeypatch.setattr(rm, "run", fake_rm)
    out = _rm_curve(RunConfig(rm_curve=[2, 8], rm_curve_seeds=3), RMConfig(seed=5), prefs, tmp_path / "c")
    assert sorted(subsets) == sorted(f"{f}-{n}-seed{s}" for f in ("pairs", "rankings") for n in (2, 8)
                                     for s in (5, 6, 7))
    assert len({frozenset(subsets[f"pairs-2-seed{s}"]) for s in (5, 6, 7)}) > 1  # other subsets per seed
    assert all(subsets[f"pairs-2-seed{s}"] == subsets[f"rankings-2-seed{s}"] for s in (5, 6, 7))
    point = next(p for p in out["points"] if p["form"] == "pairs" and p["prompts"] == 8)
    assert point["heldout_accuracy_per_seed"] == pytest.approx([0.63, 0.64, 0.65])
    assert point["heldout_accuracy"] == pytest.approx(0.64) and point["seeds"] == 3 and point["train_seconds"] == 3
    assert len(out["runs"]) == 12 and out["seeds"] == 3
    # rankings: 0.68 at 2 prompts, 0.74 at 8 — above the pairs' 0.64 from the smallest count on
    assert out["rankings_match_pairs"] == {"pairs_prompts": 8, "pairs_accuracy": pytest.approx(0.64),
                                           "rankings_prompts": 2, "bound": "at_most"}
    # explicit seeds (benchmarks/rm_curve.py): those, in that order, whatever rm_curve_seeds says
    subsets.clear()
    out = _rm_curve(RunConfig(rm_curve=[8], rm_curve_seeds=3), RMConfig(seed=5), prefs, tmp_path / "d", seeds=[9, 2])
    assert sorted(subsets) == ["pairs-8-seed2", "pairs-8-seed9", "rankings-8-seed2", "rankings-8-seed9"]
    assert out["seeds"] == 2 and [r["seed"] for r in out["runs"]] == [9, 9, 2, 2]


def test_a_run_is_refused_while_a_stage_command_writes_into_its_folder(tmp_path):
    from alignkit.pipeline import _flock, run_lock

    (tmp_path / ".stale.lock").write_text("host:1\n")  # left by a command that ended: no one holds it
    command = _flock(tmp_path / ".sft.lock", owner=True)  # `alignkit sft out=<run>/sft`, still running
    try:
        with pytest.raises(AlignkitError, match=r"sft is in use by an alignkit command \(process .+:\d+\)"):
            with run_lock(tmp_path, wait_workers_s=0.1):
                pass
    finally:
        command.close()
    with run_lock(tmp_path, wait_workers_s=0.1):
        pass



def test_later_ppo_rounds_train_on_every_rounds_preferences_from_the_policy_before(tmp_path):
    """ppo_rounds: round r collects preferences on round r−1's answers, trains a reward model on the run's
    preferences and every later round's, and PPO from round r−1's policy (its reference) against it."""
    from alignkit.pipeline import plan

    run = tmp_path / "demo"
    jobs = {job.name: job for job in plan(RunConfig(ppo_rounds=3), run, "fw", "fs")}
    assert "ppo_round_4" not in jobs and {"ppo_round_2", "ppo_round_3"} <= jobs.keys()
    prefs3 = jobs["ppo_round_3_prefs-parts/0"].kwargs["qcfg"]
    assert prefs3.model == str(run / "ppo_round_2" / "model") and prefs3.heldout_k == 0 and prefs3.seed == 2
    assert jobs["ppo_round_3_prefs-parts/0"].deps == ("ppo_round_2",)
    rm3 = jobs["ppo_round_3_rm"]
    assert rm3.kwargs["rcfg"].data.split(",") == [str(run / "prefs" / "rankings.jsonl"),
                                                   str(run / "ppo_round_2_prefs" / "rankings.jsonl"),
                                                   str(run / "ppo_round_3_prefs" / "rankings.jsonl")]
    assert set(rm3.deps) == {"prefs", "ppo_round_2_prefs", "ppo_round_3_prefs"}
    assert rm3.kwargs["rcfg"].model == jobs["rm"].kwargs["rcfg"].model  # each from the SFT model
    ppo3 = jobs["ppo_round_3"].kwargs["scfg"]
    assert ppo3.model == str(run / "ppo_round_2" / "model") and ppo3.rm == str(run / "ppo_round_3_rm" / "model")
    assert jobs["ppo_round_3"].deps == ("ppo_round_3_rm", "eval")
    # a change in round 2 makes round 3 again
    other = {job.name: job for job in plan(RunConfig(ppo_rounds=3, ppo=replace(RunConfig().ppo, lr=1e-4)), run,
                                           "fw", "fs")}
    assert other["ppo_round_3"].fp != jobs["ppo_round_3"].fp
    assert other["ppo_round_3_rm"].fp != jobs["ppo_round_3_rm"].fp  # its data come from round 2's answers
    assert "ppo_round_2" not in {job.name for job in plan(RunConfig(), run, "fw", "fs")}
