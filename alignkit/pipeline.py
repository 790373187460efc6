"""The recipe, as a short list of stage calls: world → tokenizer → pretrain → SFT, then a small graph of
jobs — evaluation of base and SFT; preferences → reward model (+ its data-efficiency curve) → best-of-n,
PPO, PPO-ptx, GRPO; preferences → DPO (+ a β sweep); GRPO with a checker — and the report.

The jobs after SFT that do not depend on each other run side by side in ``workers`` processes: on a
2-core CPU two one-thread processes do about 1.36× the work of one two-thread process, because these
models are too small for two threads to keep both cores busy. Each job still runs one stage, so the
results do not depend on the schedule; only the thread count can change the last bits of the numbers.

Each stage writes into ``runs/<name>/<stage>/`` and records a fingerprint of its resolved config, of
its inputs' fingerprints and of the alignkit version. A stage whose fingerprint is unchanged and whose
``summary.json`` exists is skipped; one that was interrupted (same fingerprint, no summary) is resumed;
one whose config or inputs changed is run again from scratch.

    alignkit run                      # tiny preset into runs/demo
    alignkit run --preset smoke name=quick pretrain.max_steps=20
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

import torch

from alignkit.config import RunConfig, dump_yaml, to_dict
from alignkit.errors import AlignkitError, ConfigError
from alignkit.training.checkpoint import atomic_path, write_json_atomic
from alignkit.training.logging import info


def run(cfg: RunConfig) -> dict:
    """Run (or skip) every stage of the recipe so far; writes and returns ``runs/<name>/summary.json``."""
    run_dir = Path(cfg.runs_dir) / cfg.name
    run_dir.mkdir(parents=True, exist_ok=True)
    with run_lock(run_dir):
        return _run(cfg, run_dir)


def _run(cfg: RunConfig, run_dir: Path) -> dict:
    from alignkit.world import build_world

    start = time.perf_counter()
    dump_yaml(cfg, run_dir / "config.yaml")
    world = build_world(**asdict(cfg.world))
    stages: dict = {}

    # 1. the world: every dataset exported as JSONL in the record schema
    fp_world = fingerprint(to_dict(cfg.world))
    stages["world"] = run_stage(run_dir / "world", fp_world, lambda d: _export_world(world, d))

    # 2. tokenizer: byte-level BPE on the pretraining corpus (which the SFT data proportion does not change)
    fp_corpus = fingerprint({k: v for k, v in to_dict(cfg.world).items() if not k.startswith("sft_")})
    fp_tok = fingerprint(to_dict(cfg.tokenizer), fp_corpus)
    stages["tokenizer"] = run_stage(run_dir / "tokenizer", fp_tok, lambda d: _train_tokenizer(cfg, d))

    # 3. pretrain
    from alignkit.stages import pretrain
    pcfg = replace(cfg.pretrain, data=str(run_dir / "world" / "pretrain.jsonl"), tokenizer=str(run_dir / "tokenizer"),
                   model="", out=str(run_dir / "pretrain"))
    fp_pre = fingerprint(_identity(pcfg, run_dir), fp_tok)
    stages["pretrain"] = run_stage(run_dir / "pretrain", fp_pre,
                                   lambda d, resume: pretrain.run(replace(pcfg, resume=resume, overwrite=not resume)),
                                   resumable=True)

    # 4. supervised fine-tuning on the world's demonstrations
    from alignkit.stages import sft
    scfg = replace(cfg.sft, model=str(run_dir / "pretrain" / "model"), data=str(run_dir / "world" / "sft.jsonl"),
                   out=str(run_dir / "sft"))
    fp_sft = fingerprint(_identity(scfg, run_dir), fp_pre, fp_world)
    stages["sft"] = run_stage(run_dir / "sft", fp_sft,
                              lambda d, resume: sft.run(replace(scfg, resume=resume, overwrite=not resume)),
                              resumable=True)

    # 5-11. everything after SFT, as jobs: independent ones run side by side in `workers` processes
    from alignkit.eval import plots

    jobs = plan(cfg, run_dir, fp_world, fp_sft)
    results = run_jobs(Context(cfg, run_dir, world), jobs, workers(cfg))
    evals = {k: v for k, v in results["eval"].items() if k != "fingerprint"}  # the stage marker, not a model
    for job in jobs:
        s = results[job.name]
        if job.name != "eval" and "/" not in job.name:  # the preferences' parts are summed in "prefs"
            stages[job.name] = s
        if job.name == "bon":
            evals[f"best_of_{s['samples_per_prompt']}"] = s["eval"]
        elif "eval" in s:
            evals[job.name] = s["eval"]

    # 12. the figures the report does not draw: best-of-n over n, PPO over iterations (the report draws the
    #     frontier, over-optimisation, the reward model's curve, win rates and training curves)
    plots.plot_best_of_n(stages["bon"]["curve"], stages["bon"]["sft_gold_reward"], run_dir / "best_of_n.png")
    if "ppo" in stages:
        plots.plot_ppo(stages["ppo"]["curve"], run_dir / "ppo.png")

    summary = {
        "preset": cfg.preset,
        "wall_seconds": round(time.perf_counter() - start, 1),
        "machine": machine(),
        "stages": stages,
        "models": {k: evals[k] for k in sorted(evals, key=lambda name: plots.model_rank(name, stages))},
    }
    write_json_atomic(run_dir / "summary.json", summary)
    if cfg.report:
        from alignkit.eval.report import write_report

        paths = write_report(run_dir)
        info(f"report: {paths['html']}")
    return summary


# ----------------------------------------------------------------------------------------------------
# the stages after SFT as a graph of jobs

@dataclass
class Job:
    """One stage after SFT: ``target(ctx, stage_dir, resume, **kwargs)`` returns its summary. It runs when
    every stage in ``deps`` has finished; jobs are started in list order."""
    name: str
    fp: str
    target: Callable
    kwargs: dict = field(default_factory=dict)
    deps: tuple[str, ...] = ()
    resumable: bool = False


class Context:
    """What every job needs: the run's config and folder, and the world (built once per process)."""

    def __init__(self, cfg: RunConfig, run_dir: Path, world=None):
        self.cfg, self.run_dir, self._world = cfg, run_dir, world

    @property
    def world(self):
        if self._world is None:
            from alignkit.world import build_world

            self._world = build_world(**asdict(self.cfg.world))
        return self._world

    def __getstate__(self) -> dict:  # a worker process builds its own world
        return {**self.__dict__, "_world": None}


def plan(cfg: RunConfig, run_dir: Path, fp_world: str, fp_sft: str) -> list[Job]:
    """The jobs after SFT with their fingerprints and inputs, in the order they start (``START_ORDER``)."""
    sft_model, prefs_dir, rm_model = str(run_dir / "sft" / "model"), run_dir / "prefs", str(run_dir / "rm" / "model")
    fp_eval_cfg = _identity(cfg.eval, run_dir)
    jobs = [Job("eval", fingerprint(fp_eval_cfg, fp_sft, fp_world), _job_eval)]
    # preferences, the reward model on them (evaluated against the oracle on held-out samples), its
    # data-efficiency curve, and best-of-n with it
    qcfg = replace(cfg.prefs, model=sft_model, out=str(prefs_dir), overwrite=True)
    fp_prefs = _prefs_jobs(jobs, run_dir, "prefs", qcfg, (fp_sft, fp_world))
    rcfg = rm_config(cfg, run_dir)
    fp_rm = fingerprint(_identity(rcfg, run_dir), fp_sft, fp_prefs)
    jobs.append(Job("rm", fp_rm, _job_rm, {"rcfg": rcfg}, ("prefs",), resumable=True))
    if cfg.rm_pairs:
        pcfg = replace(rcfg, data=f"{prefs_dir / 'pairs.jsonl'},{prefs_dir / 'labels.jsonl'}",
                       out=str(run_dir / "rm_pairs"))
        jobs.append(Job("rm_pairs", fingerprint(_identity(pcfg, run_dir), fp_sft, fp_prefs), _job_rm, {"rcfg": pcfg},
                        ("prefs",), resumable=True))
    if cfg.rm_curve:
        fp_curve = fingerprint({"counts": cfg.rm_curve, "epochs": cfg.rm_curve_epochs, "steps": cfg.rm_curve_steps,
                                "seeds": cfg.rm_curve_seeds, "subsets": "random"}, fp_rm)
        jobs.append(Job("rm_curve", fp_curve, _job_rm_curve, {"rcfg": rcfg}, ("prefs",)))
    bcfg = replace(cfg.bon, model=sft_model, rm=rm_model, out=str(run_dir / "bon"), eval=cfg.eval, overwrite=True)
    jobs.append(Job("bon", fingerprint(_identity(bcfg, run_dir), fp_rm), _job_bon, {"bcfg": bcfg}, ("rm",)))
    # policies, each evaluated against SFT: DPO (+ a β sweep, which reuses the first run's reference
    # log-probs), PPO (+ PPO-ptx), GRPO with the reward model and with a checker
    for beta in [cfg.dpo.beta, *[b for b in cfg.dpo_betas if float(b) != cfg.dpo.beta]]:
        name = "dpo" if beta == cfg.dpo.beta else f"dpo_beta_{beta}"
        dcfg = replace(cfg.dpo, model=sft_model, data=str(prefs_dir / "rankings.jsonl"), out=str(run_dir / name),
                       beta=float(beta))
        deps = ("prefs", "eval") if name == "dpo" else ("prefs", "eval", "dpo")
        jobs.append(Job(name, fingerprint(_identity(dcfg, run_dir), fp_sft, fp_prefs, fp_eval_cfg), _job_policy,
                        {"kind": "dpo", "scfg": dcfg}, deps, resumable=True))
    # DPO rounds after the first: preferences on the latest policy's answers, and the next policy from it
    previous, fp_previous = "dpo", next(job.fp for job in jobs if job.name == "dpo")
    for r in range(2, cfg.dpo_rounds + 1):
        name, prefs_name = f"dpo_round_{r}", f"dpo_round_{r}_prefs"
        model = str(run_dir / previous / "model")
        rq = replace(cfg.prefs, model=model, out=str(run_dir / prefs_name), seed=r - 1, heldout_k=0, overwrite=True)
        fp_round_prefs = _prefs_jobs(jobs, run_dir, prefs_name, rq, (fp_previous, fp_world), deps=(previous,))
        dcfg = replace(cfg.dpo, model=model, ref_model=model, data=str(run_dir / prefs_name / "rankings.jsonl"),
                       out=str(run_dir / name))
        jobs.append(Job(name, fingerprint(_identity(dcfg, run_dir), fp_round_prefs, fp_eval_cfg), _job_policy,
                        {"kind": "dpo", "scfg": dcfg}, (prefs_name, "eval"), resumable=True))
        previous, fp_previous = name, jobs[-1].fp
    if cfg.run_ppo:
        ocfg = replace(cfg.ppo, model=sft_model, rm=rm_model, prompts="world", out=str(run_dir / "ppo"))
        variants = [("ppo", ocfg)]
        if cfg.ppo_ptx_coef > 0:
            variants.append(("ppo_ptx", replace(ocfg, ptx_coef=cfg.ppo_ptx_coef, out=str(run_dir / "ppo_ptx"),
                                                snapshots=[])))
        for name, c in variants:
            jobs.append(Job(name, fingerprint(_identity(c, run_dir), fp_sft, fp_rm, fp_world, fp_eval_cfg), _job_policy,
                            {"kind": "ppo", "scfg": c}, ("rm", "eval"), resumable=True))
        _ppo_round_jobs(jobs, cfg, run_dir, rcfg, ocfg, fp_rm, fp_world, fp_eval_cfg)
    if cfg.run_grpo:
        runs = [("grpo", replace(cfg.grpo, reward="rm", rm=rm_model, categories=[]))]
        if cfg.grpo_checker:
            runs.append((f"grpo_{'_'.join(cfg.grpo_checker_categories) or 'checker'}",
                         replace(cfg.grpo, reward=cfg.grpo_checker, rm="", categories=list(cfg.grpo_checker_categories))))
        for name, gcfg in runs:
            gcfg = replace(gcfg, model=sft_model, prompts="world", out=str(run_dir / name))
            fp = fingerprint(_identity(gcfg, run_dir), fp_sft, fp_rm if gcfg.rm else "", fp_world, fp_eval_cfg,
                             f"draws={cfg.grpo_checker_draws}" if gcfg.categories else "")
            jobs.append(Job(name, fp, _job_policy, {"kind": "grpo", "scfg": gcfg},
                            ("rm", "eval") if gcfg.rm else ("eval",), resumable=True))
    return sorted(jobs, key=_start_rank)


def _ppo_round_jobs(jobs: list[Job], cfg: RunConfig, run_dir: Path, rcfg, ocfg, fp_rm: str, fp_world: str,
                    fp_eval_cfg: str) -> None:
    """PPO rounds after the first — iterated online RLHF (Bai et al. 2022, §4.5): preferences on the latest
    policy's answers, a reward model on every round's preferences so far (rm's keys, from the SFT model), and
    PPO on from the latest policy, its reference, against that reward model; evaluated as ppo_round_<r>."""
    previous = "ppo"
    fp_previous = next(job.fp for job in jobs if job.name == previous)
    data, prefs_names, fp_data = [rcfg.data], ["prefs"], [fp_rm]
    for r in range(2, cfg.ppo_rounds + 1):
        name, prefs_name, rm_name = f"ppo_round_{r}", f"ppo_round_{r}_prefs", f"ppo_round_{r}_rm"
        model = str(run_dir / previous / "model")
        rq = replace(cfg.prefs, model=model, out=str(run_dir / prefs_name), seed=r - 1, heldout_k=0, overwrite=True)
        fp_data.append(_prefs_jobs(jobs, run_dir, prefs_name, rq, (fp_previous, fp_world), deps=(previous,)))
        data.append(str(run_dir / prefs_name / "rankings.jsonl"))
        prefs_names.append(prefs_name)
        rr = replace(rcfg, data=",".join(data), out=str(run_dir / rm_name))
        jobs.append(Job(rm_name, fingerprint(_identity(rr, run_dir), *fp_data), _job_rm, {"rcfg": rr},
                        tuple(prefs_names), resumable=True))
        pc = replace(ocfg, model=model, rm=str(run_dir / rm_name / "model"), out=str(run_dir / name), snapshots=[])
        jobs.append(Job(name, fingerprint(_identity(pc, run_dir), jobs[-1].fp, fp_previous, fp_world, fp_eval_cfg),
                        _job_policy, {"kind": "ppo", "scfg": pc}, (rm_name, "eval"), resumable=True))
        previous, fp_previous = name, jobs[-1].fp


# The stage keys the run sets itself (inputs and outputs inside runs/<name>/, resume): a value given for one
# of them would be ignored, so it is refused (:func:`check_run_keys`).
RUN_SETS = {
    "pretrain": ("model", "data", "tokenizer", "out", "resume", "overwrite"),
    "sft": ("model", "data", "out", "resume", "overwrite"),
    "eval": ("out", "overwrite"),
    "prefs": ("model", "out", "overwrite"),
    "rm": ("model", "data", "eval_data", "out", "resume", "overwrite"),
    "bon": ("model", "rm", "out", "overwrite"),
    "dpo": ("model", "ref_model", "data", "out", "resume", "overwrite"),
    "ppo": ("model", "rm", "prompts", "out", "resume", "overwrite"),
    "grpo": ("model", "rm", "reward", "prompts", "categories", "out", "resume", "overwrite"),
}


def check_run_keys(cfg: RunConfig, default: RunConfig) -> None:
    """Refuse, in one line, a value for a stage key the run sets itself (:data:`RUN_SETS`): ``cfg`` as given,
    ``default`` the same preset without the user's config file and overrides."""
    for section, keys in RUN_SETS.items():
        for key in keys:
            if getattr(getattr(cfg, section), key) != getattr(getattr(default, section), key):
                raise ConfigError(f"{section}.{key} is set by `alignkit run` (its inputs and outputs live in "
                                  f"runs/<name>/); to choose it, run the stage by itself: alignkit {section} ...")


def check_run_values(cfg: RunConfig) -> None:
    """Refuse, in one line and before any work, values that a stage of the run would only refuse when it
    starts, after pretraining and SFT: unknown categories, PPO snapshots beyond its steps, a checker that does
    not import."""
    from alignkit.rollout.rewards import parse_reward
    from alignkit.world import check_categories

    if cfg.name in ("", ".", "..") or "/" in cfg.name or "\\" in cfg.name:
        raise ConfigError(f"name={cfg.name!r}: the run's folder under runs_dir, so one plain folder name (e.g. demo)")
    for key, categories in (("eval.categories", cfg.eval.categories), ("grpo.categories", cfg.grpo.categories),
                            ("grpo_checker_categories", cfg.grpo_checker_categories)):
        try:
            check_categories(categories)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None
    if bad := [s for s in cfg.ppo.snapshots if s > cfg.ppo.steps]:
        raise ConfigError(f"ppo.snapshots: {bad} beyond ppo.steps={cfg.ppo.steps}")
    if cfg.run_grpo and cfg.grpo_checker:
        try:
            parse_reward(cfg.grpo_checker)
        except AlignkitError as e:
            raise ConfigError(f"grpo_checker: {str(e).removeprefix('reward: ')}") from None


def rm_config(cfg: RunConfig, run_dir: Path):
    """The run's reward-model stage: on the SFT model and the run's preferences, with the SFT model as the
    prior when ``rm_prior`` (also what ``benchmarks/rm_curve.py`` retrains)."""
    sft_model, prefs_dir = str(run_dir / "sft" / "model"), run_dir / "prefs"
    return replace(cfg.rm, model=sft_model, data=str(prefs_dir / "rankings.jsonl"),
                   eval_data=str(prefs_dir / "heldout.jsonl"), out=str(run_dir / "rm"),
                   prior=sft_model if cfg.rm_prior else cfg.rm.prior)


def _prefs_jobs(jobs: list[Job], run_dir: Path, name: str, qcfg, inputs: tuple, deps: tuple[str, ...] = ()) -> str:
    """Append the jobs that collect preferences into ``run_dir/name`` — ``PREFS_PARTS`` parts (each every
    n-th prompt) and their merge — to ``jobs``; returns the merged stage's fingerprint."""
    parts = [f"{name}-parts/{i}" for i in range(PREFS_PARTS)]
    for i, part in enumerate(parts):
        jobs.append(Job(part, fingerprint(_identity(qcfg, run_dir), *inputs, {"part": [i, PREFS_PARTS]}), _job_prefs,
                        {"qcfg": replace(qcfg, out=str(run_dir / part)), "part": (i, PREFS_PARTS)}, deps))
    fp = fingerprint(_identity(qcfg, run_dir), *inputs, {"parts": PREFS_PARTS})
    jobs.append(Job(name, fp, _job_prefs_merge, {"qcfg": qcfg, "parts": parts}, tuple(parts)))
    return fp


# The preferences are collected in this many parts (each every PREFS_PARTS-th prompt, with seeds of its
# own), whatever the number of workers: the data does not depend on the schedule, and two workers share
# the one job that everything but the checker GRPO run waits for.
PREFS_PARTS = 2

# Start order when several jobs are ready: the preferences first (everything but the checker GRPO run
# waits for them), then the reward model (PPO, PPO-ptx, GRPO and best-of-n wait for it), then the longest
# jobs, so that two workers finish together rather than one idling; later DPO and PPO rounds (each waiting
# for the one before) right after DPO and PPO. With the tiny preset's job times this order ends the jobs
# within 2 % of the bound "total work / 2". With one worker the jobs run in this order, which has every job
# after its inputs.
START_ORDER = ("prefs-parts", "prefs", "rm", "eval", "grpo_checker", "rm_curve", "rm_pairs", "dpo", "dpo_round", "ppo",
               "ppo_round", "ppo_ptx", "grpo", "bon", "dpo_beta")


def _start_rank(job: Job) -> int:
    name = job.name.split("/")[0]
    if name.startswith("dpo_beta_"):
        name = "dpo_beta"
    elif name.startswith(("dpo_round_", "ppo_round_")):  # after the round before; ahead of the jobs that can wait
        name = name.split("_round_")[0] + "_round"
    elif name.startswith("grpo_"):
        name = "grpo_checker"
    return START_ORDER.index(name) if name in START_ORDER else len(START_ORDER)


def workers(cfg: RunConfig) -> int:
    if cfg.workers:
        return cfg.workers
    return 1 if torch.cuda.is_available() else min(2, os.cpu_count() or 1)


def run_jobs(ctx: Context, jobs: list[Job], n_workers: int) -> dict[str, dict]:
    """Run every job once its dependencies are done: in this process when ``n_workers`` is 1, else in
    ``n_workers`` processes (each with its share of the CPU threads). Returns {job name: summary}."""
    results: dict[str, dict] = {}
    if n_workers <= 1:
        for job in jobs:
            results[job.name] = execute(ctx, job)
        return results
    for job in jobs:  # finished stages are read here, without starting a worker
        done = finished(ctx.run_dir / job.name, job.fp, job.name)
        if done is not None:
            results[job.name] = done
    jobs = [j for j in jobs if j.name not in results]
    if not jobs:
        return results
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    threads = max(1, (os.cpu_count() or 1) // n_workers)
    ctx.cfg = _quiet(ctx.cfg)  # progress bars of processes running side by side would overwrite each other
    jobs = [replace(j, kwargs=_quiet_kwargs(j.kwargs)) for j in jobs]
    pending, running = jobs, {}
    info(f"run: stages after SFT in {n_workers} processes × {threads} threads")
    with ProcessPoolExecutor(n_workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(threads, ctx.run_dir, os.getpid())) as pool:
        try:
            while pending or running:
                for job in [j for j in pending if all(d in results for d in j.deps)]:
                    if len(running) < n_workers:
                        running[pool.submit(execute, ctx, job)] = (job, time.perf_counter())
                        pending.remove(job)
                if not running:
                    raise AlignkitError(f"run: {', '.join(j.name for j in pending)} wait for stages not in the run")
                done, _ = wait(running, return_when=FIRST_COMPLETED)
                for future in done:
                    job, t0 = running.pop(future)
                    results[job.name] = future.result()
                    info(f"{job.name}: done ({time.perf_counter() - t0:.0f} s)")
        except KeyboardInterrupt:
            # Ctrl-C reaches the workers too; an interrupt sent to this process alone would leave them running
            # their jobs, so they are stopped here (every job resumes from its last checkpoint)
            for process in list((getattr(pool, "_processes", None) or {}).values()):
                process.terminate()
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        except BaseException:
            if running:
                info(f"run: waiting for {', '.join(j.name for j, _ in running.values())} to stop")
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    return results


def execute(ctx: Context, job: Job) -> dict:
    """One job, through run_stage (skipped when unchanged, resumed when interrupted)."""
    def fn(stage_dir, resume=False):
        return job.target(ctx, stage_dir, resume, **job.kwargs)
    return run_stage(ctx.run_dir / job.name, job.fp, fn, resumable=job.resumable, name=job.name)


def setup_worker(threads: int) -> None:
    """What a process that trains jobs of the run sets first (the run's workers, and the benchmarks that
    retrain parts of a finished run): its thread count, and as the command line does, no per-file
    "Loading weights" bars."""
    from transformers.utils import logging as hf_logging

    torch.set_num_threads(threads)
    hf_logging.disable_progress_bar()


def _init_worker(threads: int, run_dir: Path, parent: int) -> None:
    global _WORKER_LOCK
    setup_worker(threads)
    # Ctrl-C in a terminal reaches the whole process group: the main process stops the workers itself,
    # so each of them does not print a traceback of its own
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _WORKER_LOCK = _flock(run_dir / WORKERS_LOCK, shared=True)  # released when this process ends
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()  # (gone already, if killed early)


_WORKER_LOCK = None


def _watch_parent(parent: int, poll_s: float = 1.0, exit_fn=os._exit) -> None:
    """End this worker when the run's main process is gone (``kill -9``, the out-of-memory killer: no
    handler of its own sees those) instead of letting it write on into the run folder. Ending at once is
    as safe as the kill itself: every write of a stage either lands whole or is dropped on resume."""
    while os.getppid() == parent:
        time.sleep(poll_s)
    exit_fn(1)


# ----------------------------------------------------------------------------------------------------
# one alignkit run per run folder

RUN_LOCK, WORKERS_LOCK = ".run.lock", ".workers.lock"


@contextmanager
def run_lock(run_dir: Path, wait_workers_s: float = 60.0):
    """Hold the run folder for this process: a second ``alignkit run`` into it is refused while this one
    runs, and waits (up to ``wait_workers_s``) for worker processes of an earlier, killed run to stop.
    The locks are ``flock``s, released by the system when a process ends however it ends; where there is
    no ``flock`` (Windows, a file system without locks) nothing is locked."""
    held = _flock(run_dir / RUN_LOCK, owner=True)
    if held is False:
        raise AlignkitError(f"{run_dir} is in use by another alignkit run (process {_read(run_dir / RUN_LOCK) or '?'}): "
                            "wait for it to finish or stop it, or pass another name=")
    try:
        for lock in sorted(run_dir.glob(".*.lock")):  # a stage command writing into one of the run's folders
            if lock.name not in (RUN_LOCK, WORKERS_LOCK):
                _refuse_if_held(lock, f"{run_dir / lock.name[1:-len('.lock')]} is in use by an alignkit command",
                                "name=")
        deadline, said = time.monotonic() + wait_workers_s, False
        while (workers := _flock(run_dir / WORKERS_LOCK)) is False:
            if time.monotonic() > deadline:
                raise AlignkitError(f"{run_dir}: worker processes of an earlier alignkit run are still writing to "
                                    f"it after {wait_workers_s:.0f} s; stop them (see `ps`) and run again")
            if not said:
                info(f"run: waiting for the worker processes of an earlier run in {run_dir} to stop")
                said = True
            time.sleep(0.5)
        if workers is not None:
            workers.close()  # none left: this run's own workers take it shared
        yield
    finally:
        if held is not None:
            held.close()


@contextmanager
def out_lock(out: Path):
    """Hold a stage command's output folder while it runs: a second command into the same ``out`` is refused,
    and so is one into a stage folder of a running ``alignkit run``. The lock is ``.<name>.lock`` beside
    ``out`` (inside it, ``overwrite=true`` would delete it with the folder), removed when the command ends."""
    out = Path(out)
    if (out.parent / RUN_LOCK).is_file():
        _refuse_if_held(out.parent / RUN_LOCK, f"{out.parent} is in use by an alignkit run", "out=")
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.parent / f".{out.name}.lock"
    while True:
        held = _flock(lock, owner=True)
        if held is False:
            raise AlignkitError(f"{out} is in use by another alignkit command (process "
                                f"{_read(lock) or '?'}): wait for it to finish, or pass another out=")
        if held is None or _same_file(held, lock):
            break
        held.close()  # the holder removed the file as this process locked it: lock the new one
    try:
        yield
    finally:
        if held is not None:
            lock.unlink(missing_ok=True)  # before the release, so that no one locks a removed file unknowingly
            held.close()


def _refuse_if_held(lock: Path, in_use: str, other: str) -> None:
    """Raise ``in_use`` (with the holder's process) when another process holds ``lock``; hold nothing."""
    probe = _flock(lock, shared=True)
    if probe is False:
        raise AlignkitError(f"{in_use} (process {_read(lock) or '?'}): wait for it to finish, or pass another {other}")
    if probe is not None:
        probe.close()


def _same_file(f, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(f.fileno()), os.stat(path))
    except FileNotFoundError:
        return False


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _flock(path: Path, *, shared: bool = False, owner: bool = False):
    """An open file holding an flock on ``path`` (exclusive, or shared), False when another process holds a
    conflicting one, None where there is no flock. ``owner`` writes this process's id into the file."""
    import errno

    try:
        import fcntl
    except ImportError:  # Windows
        return None
    try:
        f = open(path, "a+")
    except OSError as e:
        raise AlignkitError(f"{path}: {e.strerror} (its folder must be writable)") from None
    try:
        fcntl.flock(f, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return False
    except OSError as e:  # a file system without locks (some NFS, FUSE or SMB mounts): run unlocked
        f.close()
        if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            return None
        raise AlignkitError(f"{path}: {e.strerror}") from None
    if owner:
        f.truncate(0)
        f.write(f"{socket.gethostname()}:{os.getpid()}\n")
        f.flush()
    return f


def _quiet(cfg):
    """``cfg`` (a dataclass) with ``progress`` off in it and in every section."""
    changes = {f.name: _quiet(getattr(cfg, f.name)) for f in fields(cfg) if is_dataclass(getattr(cfg, f.name))}
    if any(f.name == "progress" for f in fields(cfg)):
        changes["progress"] = False
    return replace(cfg, **changes)


def _quiet_kwargs(kwargs: dict) -> dict:
    return {k: _quiet(v) if is_dataclass(v) else v for k, v in kwargs.items()}


def _job_prefs(ctx: Context, stage_dir: Path, resume: bool, qcfg, part: tuple[int, int]) -> dict:
    from alignkit.stages import prefs

    return prefs.run(qcfg, ctx.world, part=part)


def _job_prefs_merge(ctx: Context, stage_dir: Path, resume: bool, qcfg, parts: list[str]) -> dict:
    from alignkit.stages import prefs

    return prefs.merge(qcfg, [ctx.run_dir / p for p in parts], stage_dir)


def _job_eval(ctx: Context, stage_dir: Path, resume: bool) -> dict:
    return _evaluate(ctx.cfg, ctx.world, ctx.run_dir, stage_dir)


def _job_rm(ctx: Context, stage_dir: Path, resume: bool, rcfg) -> dict:
    from alignkit.stages import rm

    return rm.run(replace(rcfg, resume=resume, overwrite=not resume))


def _job_policy(ctx: Context, stage_dir: Path, resume: bool, kind: str, scfg) -> dict:
    """Train a policy (dpo, ppo or grpo), then evaluate it against SFT on the held-out prompts."""
    from alignkit.stages import dpo, grpo, ppo

    if kind == "dpo" and Path(scfg.out).name.startswith("dpo_beta_"):  # same reference log-probs as dpo
        cache = ctx.run_dir / "dpo" / "ref_logps.pt"
        if cache.is_file() and not (stage_dir / "ref_logps.pt").exists():
            with atomic_path(stage_dir / "ref_logps.pt") as tmp:  # whole or not at all
                shutil.copyfile(cache, tmp)
    train = {"dpo": dpo.run, "ppo": lambda c: ppo.run(c, ctx.world), "grpo": lambda c: grpo.run(c, ctx.world)}[kind]
    summary = _train_and_evaluate(train, replace(scfg, resume=resume, overwrite=not resume), ctx.cfg, ctx.world,
                                  ctx.run_dir)
    if kind == "grpo" and getattr(scfg, "categories", None) and summary:
        # a checker run: accuracy on its categories' held-out prompts, SFT's (before) and its own (after),
        # with several samples per prompt (one each, as in the comparison table, is too noisy for a difference)
        from alignkit.eval.harness import category_accuracy

        draws = ctx.cfg.grpo_checker_draws
        eval_cfg = replace(ctx.cfg.eval, progress=False)
        before = category_accuracy(ctx.run_dir / "sft" / "model", ctx.world, eval_cfg, scfg.categories, draws=draws)
        after = category_accuracy(Path(scfg.out) / "model", ctx.world, eval_cfg, scfg.categories, draws=draws)
        for category in scfg.categories:
            for when, acc in (("before", before), ("after", after)):
                summary[f"{category}_accuracy_{when}"] = acc.get(category, {}).get("accuracy")
                summary[f"{category}_accuracy_{when}_ci"] = acc.get(category, {}).get("ci")
        summary["accuracy_draws"] = draws
    return summary


def _job_bon(ctx: Context, stage_dir: Path, resume: bool, bcfg) -> dict:
    from alignkit.stages import bon

    return bon.run(bcfg, ctx.world)


def _job_rm_curve(ctx: Context, stage_dir: Path, resume: bool, rcfg) -> dict:
    return _rm_curve(ctx.cfg, rcfg, ctx.run_dir / "prefs", stage_dir)


def run_stage(stage_dir: Path, fp: str, fn: Callable, *, resumable: bool = False, name: str = "") -> dict:
    """Run ``fn`` unless ``stage_dir`` already holds a finished run with fingerprint ``fp``."""
    name = name or stage_dir.name
    done = finished(stage_dir, fp, name)
    if done is not None:
        return done
    same = _same_fingerprint(stage_dir, fp)
    if not (same and resumable):
        shutil.rmtree(stage_dir, ignore_errors=True)
    stage_dir.mkdir(parents=True, exist_ok=True)
    (stage_dir / ".fingerprint").write_text(fp + "\n")
    info(f"{name}: {'resuming' if same and resumable else 'running'} → {stage_dir}")
    summary = fn(stage_dir, same) if resumable else fn(stage_dir)
    summary = {**summary, "fingerprint": fp}
    write_json_atomic(stage_dir / "summary.json", summary)
    return summary


def finished(stage_dir: Path, fp: str, name: str = "") -> dict | None:
    """The summary of a finished stage whose fingerprint is ``fp`` (logged as skipped), else None. Finished
    means :func:`run_stage` wrote its summary (with the fingerprint) after the whole job: a policy stage writes
    its own summary.json when training ends, before the job evaluates it."""
    path = stage_dir / "summary.json"
    if _same_fingerprint(stage_dir, fp) and path.is_file():
        try:
            summary = json.loads(path.read_text())
        except json.JSONDecodeError:
            return None
        if isinstance(summary, dict) and summary.get("fingerprint") == fp:
            info(f"{name or stage_dir.name}: unchanged, skipped ({stage_dir})")
            return summary
    return None


def _same_fingerprint(stage_dir: Path, fp: str) -> bool:
    """``stage_dir`` was started (finished or not) with fingerprint ``fp``."""
    marker = stage_dir / ".fingerprint"
    return marker.is_file() and marker.read_text().strip() == fp


def fingerprint(config: dict, *inputs: str) -> str:
    """Hash of a resolved config, the fingerprints of the stage's inputs and the alignkit version (a stage
    made by another version of the code is made again)."""
    import alignkit

    blob = json.dumps({"config": config, "inputs": inputs, "alignkit": alignkit.__version__}, sort_keys=True,
                      default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def machine() -> dict:
    return {"cpus": os.cpu_count(), "device": "cuda" if torch.cuda.is_available() else "cpu",
            "torch": torch.__version__.split("+")[0], "python": platform.python_version()}


def _identity(pcfg, run_dir: Path) -> dict:
    """A stage's keys that change its result (not progress bars, threads, resume/overwrite, out), also in its
    nested sections (best-of-n's ``eval``). Paths inside the run are written relative to it (their contents
    are fingerprinted as the inputs' stages), so a run folder copied or renamed keeps its finished stages."""
    inside = str(run_dir) + os.sep

    def same(v):
        return v.replace(inside, "<run>" + os.sep) if isinstance(v, str) else v

    def keep(d: dict) -> dict:
        return {k: keep(v) if isinstance(v, dict) else same(v) for k, v in d.items()
                if k not in ("progress", "resume", "overwrite", "threads", "out")}

    return keep(to_dict(pcfg))


def _train_and_evaluate(train, scfg, cfg: RunConfig, world, run_dir: Path) -> dict:
    """Train a policy stage, then evaluate its model (and its snapshots along training, if any) against SFT
    (win rate, rates, KL) into <out>/eval/."""
    summary = train(scfg)
    if not summary:
        return summary
    out = Path(scfg.out)
    summary["eval"] = _evaluate_policy(out / "model", out / "eval", cfg, world, run_dir)
    snapshots = []  # the policy along training (PPO's `snapshots`), each on the same held-out prompts
    for step in sorted(getattr(scfg, "snapshots", [])):
        e = _evaluate_policy(out / "snapshots" / f"step-{step}" / "model", out / "eval" / f"step-{step}", cfg, world,
                             run_dir)
        snapshots.append({"step": step, **{k: e[k] for k in ("gold_reward", "kl_to_sft", "win_rate_vs_sft",
                                                              "win_rate_ci")}})
    if snapshots:
        summary["snapshots"] = snapshots
    return summary


def _evaluate_policy(model_dir: Path, out: Path, cfg: RunConfig, world, run_dir: Path) -> dict:
    """A policy against SFT on the held-out prompts (SFT's answers from the evaluation stage)."""
    from alignkit.eval.harness import evaluate_dirs

    return evaluate_dirs(model_dir, world, replace(cfg.eval, out=str(out), overwrite=True),
                         reference_dir=run_dir / "sft" / "model",
                         reference_name="sft", reference_samples=run_dir / "eval" / "sft" / "samples.jsonl")


def _rm_curve(cfg: RunConfig, rcfg, prefs_dir: Path, stage_dir: Path, seeds: list[int] | None = None) -> dict:
    """Held-out accuracy against the number of labelled prompts: one comparison of two answers per prompt
    (pairs.jsonl + its tie / both_bad labels) vs one ranking of k answers per prompt, on the same prompts
    (nested random subsets), each reward model trained for ``rm_curve_steps`` optimizer steps, or
    ``rm_curve_epochs`` passes over its subset when that is 0. Over ``seeds`` (default: ``rm_curve_seeds`` of
    them from ``rcfg.seed`` on), each drawing other subsets, initialisations and data orders: a point is the mean over seeds (each
    seed's accuracy kept beside it), and ``rankings_match_pairs`` says how many ranked prompts reach the
    mean accuracy of pairs at the largest count (:func:`alignkit.eval.curve.matching_count`)."""
    from alignkit.data.sources import load_records, write_jsonl
    from alignkit.eval.curve import matching_count
    from alignkit.stages import rm

    rankings = load_records(prefs_dir / "rankings.jsonl", "ranking")
    compared = (load_records(prefs_dir / "pairs.jsonl", "pair")
                + load_records(prefs_dir / "labels.jsonl", "label", allow_empty=True))  # no tie may be said
    comparisons = [r for r in compared if (r.get("meta") or {}).get("comparison", 1) == 1]  # one per prompt
    seeds = list(range(rcfg.seed, rcfg.seed + cfg.rm_curve_seeds)) if seeds is None else seeds
    runs, surprise_memo = [], {}  # the prior's surprise at each answer, computed once for all the curve's models
    for seed in seeds:
        # nested random subsets of the prompts (the files are in category order: a prefix would be one category)
        prompts = [r["prompt"] for r in rankings]
        random.Random(f"alignkit-rm-curve:{seed}").shuffle(prompts)
        for n in cfg.rm_curve:
            keep = set(prompts[:n])
            for form, records in (("pairs", comparisons), ("rankings", rankings)):
                name = f"{form}-{n}" if len(seeds) == 1 else f"{form}-{n}-seed{seed}"
                out = stage_dir / name
                data = write_jsonl(stage_dir / f"{name}.jsonl", [r for r in records if r["prompt"] in keep])
                run = {"form": form, "prompts": len(keep), "seed": seed}
                try:
                    s = rm.run(replace(rcfg, data=str(data), out=str(out), overwrite=True, progress=False, seed=seed,
                                       normalize=False, epochs=cfg.rm_curve_epochs, max_steps=cfg.rm_curve_steps),
                               surprise_memo=surprise_memo)
                except AlignkitError as e:  # e.g. a tiny subset with no usable comparison: the point is missing
                    runs.append({**run, "heldout_accuracy": None, "skipped": str(e)})
                    continue
                runs.append({**run, "heldout_accuracy": s["heldout_accuracy"], "spearman_gold": s["spearman_gold"],
                             "train_seconds": s["train_seconds"]})
                shutil.rmtree(out / "state", ignore_errors=True)
    points = []
    for form in ("pairs", "rankings"):
        for n in sorted({r["prompts"] for r in runs if r["form"] == form}):
            group = [r for r in runs if r["form"] == form and r["prompts"] == n]
            done = [r for r in group if r["heldout_accuracy"] is not None]
            point = {"form": form, "prompts": n, "seeds": len(done),
                     "heldout_accuracy": _mean([r["heldout_accuracy"] for r in done]),
                     "heldout_accuracy_per_seed": [r["heldout_accuracy"] for r in done],
                     "spearman_gold": _mean([r["spearman_gold"] for r in done]),
                     "train_seconds": round(sum(r["train_seconds"] for r in done), 2)}
            if not done:
                point["skipped"] = group[0]["skipped"]
            points.append(point)
    return {"points": points, "seeds": len(seeds), "runs": runs,
            "rankings_match_pairs": matching_count(points)}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _export_world(world, stage_dir: Path) -> dict:
    from alignkit.world.export import export_world

    t0 = time.perf_counter()
    files = export_world(world, stage_dir)
    counts = {name: sum(1 for _ in open(path)) for name, path in files.items()}
    return {"files": {k: str(v) for k, v in files.items()}, "records": counts,
            "seconds": round(time.perf_counter() - t0, 2)}


def _train_tokenizer(cfg: RunConfig, stage_dir: Path) -> dict:
    from alignkit.data.sources import load_records
    from alignkit.models.tokenizer import save_tokenizer, train_tokenizer

    t0 = time.perf_counter()
    texts = [r["text"] for r in load_records(Path(cfg.runs_dir) / cfg.name / "world" / "pretrain.jsonl", "text")]
    tokenizer = train_tokenizer(texts, vocab_size=cfg.tokenizer.vocab_size, min_frequency=cfg.tokenizer.min_frequency)
    save_tokenizer(tokenizer, stage_dir)
    return {"vocab_size": len(tokenizer), "seconds": round(time.perf_counter() - t0, 2)}


def _evaluate(cfg: RunConfig, world, run_dir: Path, stage_dir: Path) -> dict:
    """Every model on the same held-out prompts; ``stage_dir/<model>/`` gets its summary and samples."""
    from alignkit.eval import harness
    from alignkit.models.load import load_model
    from alignkit.training.setup import resolve_device

    ecfg = cfg.eval
    tasks = harness.eval_tasks(world, ecfg)
    device = str(resolve_device(ecfg.device))
    base, base_tok = load_model(run_dir / "pretrain" / "model", device=device)
    policy, tok = load_model(run_dir / "sft" / "model", device=device)
    runs = {"base_zero_shot": harness.run_model(base, base_tok, world, tasks, "zero_shot", ecfg),
            "base_few_shot": harness.run_model(base, base_tok, world, tasks, "few_shot", ecfg),
            "sft": harness.run_model(policy, tok, world, tasks, "chat", ecfg)}
    out = {}
    for name, r in runs.items():
        refs = {"sft": runs["sft"]} | ({"base_zero_shot": runs["base_zero_shot"]} if name == "sft" else {})
        summary = harness.summarise(r, ecfg, references=refs)
        # KL to SFT is defined for chat-mode policies; a base model prompted differently has none.
        summary["kl_to_sft"] = 0.0 if name == "sft" else None
        if name == "sft":  # the scale of every win rate vs SFT: the world's ideal answers against these
            summary["ideal_win_rate_vs_sft"] = harness.ideal_win_rate(world, r, tie_margin=ecfg.tie_margin)["win_rate"]
        harness.write_run(r, summary, stage_dir / name)
        out[name] = summary
    dump_yaml(ecfg, stage_dir / "config.yaml")
    return out


def print_table(summary: dict) -> None:
    """The end-of-run summary: pretraining, SFT, and the model comparison table."""
    from alignkit.eval.harness import format_table

    pre, sft_s = summary["stages"]["pretrain"], summary["stages"]["sft"]
    print(f"\npretrain: {pre['params']:,} parameters, {pre['tokens_seen']:,} tokens in {pre['train_seconds']:.0f} s; "
          f"held-out perplexity {pre['heldout_ppl']:.2f} (uniform: vocab {pre['vocab_size']})")
    print(f"sft: {sft_s['train_examples']} demonstrations, {sft_s['steps']} steps in {sft_s['train_seconds']:.0f} s; "
          f"validation loss {sft_s['val_loss']:.3f}\n")
    st = summary["stages"]
    if "rm" in st:
        r = st["rm"]
        print(f"rm: {r['train_prompts']} ranked prompts, {r['objective']}, {r['train_seconds']:.0f} s; held-out accuracy "
              f"vs the noise-free oracle {_num(r.get('heldout_accuracy'))} (one labeller: "
              f"{_num(r.get('accuracy_ceiling'))}), Spearman with gold {_num(r.get('spearman_gold'))}")
        if r.get("prior"):
            print(f"  with the surprise of {r['prior']['model']} × {r['prior']['coef']:g}; the head alone "
                  f"{_num(r.get('heldout_accuracy_head'))}, the surprise alone {_num(r.get('heldout_accuracy_prior'))}")
    if "rm_pairs" in st:
        r = st["rm_pairs"]
        print(f"  the same on the pairwise comparisons alone ({r['train_comparisons']} comparisons on "
              f"{r['train_prompts']} prompts): held-out accuracy {_num(r.get('heldout_accuracy'))}")
    curve = st.get("rm_curve", {})
    for p in curve.get("points", []):
        seeds = p.get("heldout_accuracy_per_seed") or []
        spread = f"  (seeds {min(seeds):.3f}-{max(seeds):.3f})" if len(seeds) > 1 else ""
        print(f"  rm curve: {p['form']:<9}{p['prompts']:>6} prompts  held-out accuracy {_num(p['heldout_accuracy'])}"
              f"{spread}")
    match = curve.get("rankings_match_pairs")
    if match:
        from alignkit.eval.curve import match_sentence

        print(f"  rm curve: {match_sentence(match, curve.get('seeds', 1))}")
    if "bon" in st:
        print("best-of-n (selected by the RM; by the oracle in brackets):")
        for row in st["bon"]["curve"]:
            print(f"  n={row['n']:<3} KL {row['kl']:.2f}  proxy {row['proxy_reward']:+.3f}  gold {row['gold_reward']:+.3f} "
                  f"[{row['oracle_gold_reward']:+.3f}]  win vs sft {row['win_rate_vs_sft']:.2f}")
        print()
    models = summary["models"]
    print(format_table(models))
    if "sft" in models and "win_rate_vs_base_zero_shot" in models["sft"]:
        m = models["sft"]
        lo, hi = m["win_rate_vs_base_zero_shot_ci"]
        print(f"\nsft vs base zero-shot: win rate {m['win_rate_vs_base_zero_shot']:.2f} [{lo:.2f}, {hi:.2f}]")
    if models.get("sft", {}).get("ideal_win_rate_vs_sft") is not None:
        print(f"the world's ideal answers vs sft: win rate {models['sft']['ideal_win_rate_vs_sft']:.2f} "
              "(the most any model can reach)")
    print(f"wall time {summary['wall_seconds']:.0f} s — details in runs/<name>/summary.json and eval/<model>/")


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"
