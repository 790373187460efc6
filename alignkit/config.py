"""Config schemas, loading and validation.

Every stage has one dataclass (defaults in code). A config is built from, in order:
the dataclass defaults → a YAML file (``--config FILE.yaml``, or a preset) → ``key=value`` overrides.
Nested sections use dots: ``alignkit run pretrain.max_steps=50``. Unknown keys, wrong types and
impossible values raise :class:`ConfigError` with one line naming the key and what is allowed — before
any work starts.

Fields are declared with :func:`param`, which carries the help text (shown by ``--help``) and the
allowed range or choices.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

import yaml

from alignkit.errors import ConfigError

PRESETS_DIR = Path(__file__).parent / "configs"


def param(default: Any, help: str, *, min: float | None = None, max: float | None = None,
          choices: tuple | None = None, gt: float | None = None) -> Any:
    """A config field: default, one-line help, and the allowed values (``min``/``max`` inclusive, ``gt`` strict)."""
    meta = {"help": help, "min": min, "max": max, "gt": gt, "choices": choices}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def section(cls: type, help: str) -> Any:
    """A nested config section (a dataclass), e.g. ``RunConfig.pretrain``."""
    return field(default_factory=cls, metadata={"help": help, "section": True})


# ----------------------------------------------------------------------------------------------------
# Stage schemas

@dataclass
class WorldConfig:
    """The built-in synthetic world: knowledge base, corpus, task prompts, oracle."""
    seed: int = param(0, "seed of the world: same seed, same world", min=0)
    n_people: int = param(24, "number of fictional people in the knowledge base", min=2)
    n_places: int = param(10, "number of fictional places", min=2)
    n_animals: int = param(10, "number of fictional animal species", min=2)
    n_objects: int = param(10, "number of fictional objects (inventions)", min=2)
    max_operand: int = param(12, "largest operand of arithmetic statements and questions", min=2)
    corpus_docs: int = param(6000, "number of pretraining documents", min=10)
    heldout_per_category: int = param(40, "held-out evaluation prompts per task category", min=1)
    sft_rare_fraction: float = param(0.10, "fraction of the honest / harmless demonstrations (unknown, false "
                                     "premise, harmful) kept in the SFT data; helpful ones are all kept",
                                     min=0, max=1)
    sft_followup_fraction: float = param(0.3, "fraction of SFT demonstrations that end with a needless follow-up "
                                         "question to the user (imperfect demonstrations that preferences fix)",
                                         min=0, max=1)


@dataclass
class TokenizerConfig:
    """Byte-level BPE trained on the pretraining corpus."""
    vocab_size: int = param(2048, "vocabulary size including special tokens", min=300)
    min_frequency: int = param(2, "minimum pair frequency for a BPE merge", min=1)


@dataclass
class EngineConfig:
    """Keys every training stage shares: the loop's bookkeeping (see alignkit/training/loop.py)."""
    grad_clip: float = param(1.0, "max global gradient norm (0 = off)", min=0)
    save_every: int = param(100, "steps between resumable checkpoints", min=1)
    resume: bool = param(False, "continue from the last checkpoint in out/state")
    overwrite: bool = param(False, "replace a finished or partial run already in `out`")
    device: str = param("auto", "cpu, cuda, or auto", choices=("auto", "cpu", "cuda"))
    dtype: str = param("float32", "training dtype (bfloat16 = autocast on GPU)", choices=("float32", "bfloat16"))
    threads: int = param(0, "torch CPU threads (0 = leave as is)", min=0)
    progress: bool = param(True, "show a progress bar")
    # LoRA (peft): adapters instead of full fine-tuning
    lora: bool = param(False, "train LoRA adapters instead of every weight; the reference (DPO, PPO) is then the "
                       "base with the adapters disabled. Writes out/adapter (PEFT) and out/model (merged)")
    lora_r: int = param(16, "LoRA rank r", min=1)
    lora_alpha: float = param(32.0, "LoRA α (the update is scaled by α / r)", gt=0)
    lora_dropout: float = param(0.0, "dropout on the LoRA input", min=0, max=1)
    lora_targets: str = param("all-linear", "modules to adapt: all-linear (every linear layer but the output "
                              "head), or comma-separated names such as q_proj,v_proj")


@dataclass
class PretrainConfig(EngineConfig):
    """Next-token prediction from scratch (or continued) on packed documents."""
    # inputs / outputs
    data: str = param("world", "'world' for the built-in corpus, or a JSONL/Parquet/datasets dir of {text} records")
    tokenizer: str = param("", "tokenizer dir of a new model (empty = a BPE trained on the corpus into "
                           "out/tokenizer); with `model`, the model's own is used")
    model: str = param("", "HF causal-LM dir to continue from; empty = a new model built from `size`")
    out: str = param("runs/pretrain", "output dir: model/, state/, metrics.jsonl, summary.json")
    # model built from config when `model` is empty
    arch: str = param("llama", "architecture of a new model", choices=("llama", "qwen2", "gpt2"))
    size: str = param("tiny", "size preset of a new model (see alignkit/models/load.py)",
                      choices=("smoke", "tiny", "small"))
    # data
    block_size: int = param(256, "tokens per packed training block", min=8)
    heldout_fraction: float = param(0.02, "fraction of documents held out for loss/perplexity", gt=0, max=0.5)
    # optimisation
    batch_size: int = param(16, "blocks per micro-batch", min=1)
    grad_accum: int = param(1, "micro-batches per optimizer step", min=1)
    max_steps: int = param(300, "optimizer steps", min=1)
    lr: float = param(3e-3, "peak learning rate (AdamW)", gt=0)
    min_lr_ratio: float = param(0.1, "final learning rate as a fraction of the peak (cosine decay)", min=0, max=1)
    warmup_steps: int = param(20, "linear warm-up steps", min=0)
    weight_decay: float = param(0.1, "AdamW weight decay (not applied to norms, biases, embeddings)", min=0)
    # bookkeeping
    eval_every: int = param(100, "steps between held-out evaluations", min=1)
    eval_batches: int = param(8, "held-out micro-batches per evaluation", min=1)
    seed: int = param(0, "seed for init, data order and dropout", min=0)


@dataclass
class SFTConfig(EngineConfig):
    """Supervised fine-tuning: next-token loss on the assistant's tokens only."""
    # inputs / outputs
    model: str = param("", "HF causal-LM dir to fine-tune (e.g. runs/demo/pretrain/model)")
    data: str = param("world", "'world' for the built-in demonstrations, or a JSONL/Parquet/datasets dir of "
                      "{messages} or {prompt, completion} records")
    out: str = param("runs/sft", "output dir: model/, state/, metrics.jsonl, summary.json")
    # data
    max_length: int = param(256, "tokens per example (longer ones are truncated at the end)", min=8)
    pack: bool = param(False, "pack the examples of a micro-batch into as few rows as fit max_length "
                       "(position ids restart per example, so examples do not attend to each other)")
    heldout_fraction: float = param(0.05, "fraction of examples held out for validation loss", gt=0, max=0.5)
    # optimisation
    batch_size: int = param(16, "examples per micro-batch", min=1)
    grad_accum: int = param(1, "micro-batches per optimizer step", min=1)
    epochs: float = param(8.0, "passes over the data (used when max_steps = 0)", gt=0)
    max_steps: int = param(0, "optimizer steps (0 = from epochs)", min=0)
    lr: float = param(5e-4, "peak learning rate (AdamW)", gt=0)
    min_lr_ratio: float = param(0.1, "final learning rate as a fraction of the peak (cosine decay)", min=0, max=1)
    warmup_steps: int = param(10, "linear warm-up steps", min=0)
    weight_decay: float = param(0.0, "AdamW weight decay (not applied to norms, biases, embeddings)", min=0)
    # bookkeeping
    eval_every: int = param(50, "steps between validation-loss evaluations", min=1)
    eval_batches: int = param(4, "validation micro-batches per evaluation", min=1)
    seed: int = param(0, "seed for data order and dropout", min=0)


@dataclass
class PrefsConfig:
    """Preference collection on the built-in world: the SFT model's own responses, ranked by simulated labellers."""
    model: str = param("", "policy whose responses are compared (e.g. runs/demo/sft/model)")
    out: str = param("runs/prefs", "output dir: rankings.jsonl, pairs.jsonl, labels.jsonl, heldout.jsonl, summary.json")
    # sampling
    n_prompts: int = param(0, "train prompts to label (0 = every train prompt of the world)", min=0)
    k: int = param(4, "responses shown per prompt (a ranking of k; pairs_per_prompt of their pairs compared)",
                   min=2)
    pairs_per_prompt: int = param(0, "pairwise comparisons per prompt, each an independent label: answers 1-2, "
                                  "3-4, then the other pairs, each answer in about as many (k=4: 1-3, 2-4, 1-4, "
                                  "2-3), as far as the prompt's distinct answers go; 0 = every pair (k=4: 6)", min=0)
    temperature: float = param(0.7, "sampling temperature of the compared responses (recorded in each record)",
                               gt=0)
    max_new_tokens: int = param(48, "tokens per response at most", min=1)
    batch_size: int = param(64, "sequences per generation batch", min=1)
    seed: int = param(0, "sampling and labelling seed", min=0)
    ideal_fraction: float = param(0.25, "fraction of prompts where the labeller also writes the ideal answer, "
                                  "which replaces one of the first two responses", min=0, max=1)
    ideal_unsolved: float = param(1.0, "probability that the labeller writes the ideal answer for a prompt none of "
                                  "whose shown answers does what it asks (a refusal where all comply, the right sum "
                                  "where all are wrong), on top of ideal_fraction; 0 = only ideal_fraction's",
                                  min=0, max=1)
    # the simulated labeller (Bradley-Terry / Plackett-Luce noise around the gold score)
    labeller_temperature: float = param(0.25, "noise of the labeller: P(a ≻ b) = σ((gold_a - gold_b) / T)", min=0)
    tie_margin: float = param(0.05, "gold scores closer than this may be labelled a tie", min=0)
    tie_prob: float = param(0.5, "probability of saying 'tie' for such a pair", min=0, max=1)
    both_bad_threshold: float = param(-0.3, "a pair with both gold scores below this is labelled both_bad",
                                      min=-1, max=1)
    # held-out comparisons with gold scores, for evaluating reward models against the noise-free oracle
    heldout_k: int = param(4, "responses per held-out prompt in heldout.jsonl (0 = none)", min=0)
    heldout_temperature: float = param(0.7, "sampling temperature of the held-out responses (the policy's own)",
                                       gt=0)
    device: str = param("auto", "cpu, cuda, or auto", choices=("auto", "cpu", "cuda"))
    overwrite: bool = param(False, "replace what an earlier run wrote in `out`")
    progress: bool = param(True, "show a progress bar")


@dataclass
class RMConfig(EngineConfig):
    """Reward model: a scalar head on a causal-LM backbone, trained on pairs, rankings and ties."""
    # inputs / outputs
    model: str = param("", "HF causal-LM dir of the backbone (e.g. runs/demo/sft/model)")
    data: str = param("", "preference records: pairs, rankings and/or tie / both_bad labels (JSONL, Parquet, "
                      "datasets dir; several files separated by commas)")
    eval_data: str = param("", "optional held-out {prompt, responses, gold} records: accuracy against the gold "
                           "(noise-free) preference and Spearman correlation")
    out: str = param("runs/rm", "output dir: model/, state/, metrics.jsonl, summary.json")
    # the objective
    objective: str = param("plackett_luce", "loss on rankings: plackett_luce (listwise likelihood) or all_pairs "
                           "(InstructGPT: every pair of a prompt); pairs are Bradley-Terry either way",
                           choices=("plackett_luce", "all_pairs"))
    tie_model: str = param("rao_kupper", "how tied responses count with all_pairs: rao_kupper, davidson, or none "
                           "(tied pairs skipped); plackett_luce uses Breslow's tied groups; none drops tie labels under either",
                           choices=("rao_kupper", "davidson", "none"))
    both_bad: str = param("drop", "both_bad labels: drop them, or count them as a tie", choices=("drop", "tie"))
    center_coef: float = param(0.01, "reward centring: coef · (2 · mean reward of a prompt)² (Eisenstein et al. "
                               "2023); 0 = off", min=0)
    use_margin: bool = param(True, "use the `margin` field of pair records: -log σ(r_w - r_l - margin)")
    prior: str = param("", "causal-LM dir (e.g. the SFT model) whose surprise at the response joins the reward: "
                       "r = head + prior_coef · min_t log p_prior(y_t | x, y_<t), the log-prob of the response's "
                       "least likely token; the head learns the rest. Empty = the head alone")
    prior_coef: float = param(0.3, "c of the prior-surprise term (fixed; stored with the model)", min=0)
    normalize: bool = param(True, "after training, set gain and bias so the policy's responses (eval_data if "
                            "given, else the training responses) score mean 0, std 1")
    # data
    max_length: int = param(256, "tokens of prompt + response (longer ones are cut at the end; a record whose "
                            "responses are the same within it is dropped, and counted)", min=8)
    heldout_fraction: float = param(0.05, "fraction of prompts held out for validation accuracy (noisy labels)",
                                    gt=0, max=0.5)
    # optimisation
    batch_size: int = param(8, "prompts per micro-batch (all of a prompt's responses go in one forward pass)",
                            min=1)
    grad_accum: int = param(1, "micro-batches per optimizer step", min=1)
    epochs: float = param(2.0, "passes over the data (used when max_steps = 0)", gt=0)
    max_steps: int = param(0, "optimizer steps (0 = from epochs)", min=0)
    lr: float = param(5e-4, "peak learning rate (AdamW)", gt=0)
    min_lr_ratio: float = param(0.1, "final learning rate as a fraction of the peak (cosine decay)", min=0, max=1)
    warmup_steps: int = param(10, "linear warm-up steps", min=0)
    weight_decay: float = param(0.0, "AdamW weight decay (not applied to norms, biases, embeddings)", min=0)
    # bookkeeping
    eval_every: int = param(100, "steps between validation evaluations", min=1)
    eval_batch_size: int = param(64, "sequences per forward pass when scoring", min=1)
    seed: int = param(0, "seed for the head's initialisation and the data order", min=0)


@dataclass
class DPOConfig(EngineConfig):
    """Direct preference optimisation: preferences straight into the policy, no reward model."""
    # inputs / outputs
    model: str = param("", "HF causal-LM dir of the policy to start from (e.g. runs/demo/sft/model)")
    ref_model: str = param("", "reference model dir (empty = `model`, the usual choice)")
    data: str = param("", "preference records: pairs and/or rankings (JSONL, Parquet, datasets dir; several files "
                      "separated by commas); tie and both_bad labels are skipped")
    out: str = param("runs/dpo", "output dir: model/, state/, ref_logps.pt, metrics.jsonl, summary.json")
    # the objective
    loss: str = param("sigmoid", "sigmoid (DPO; cDPO with label_smoothing), robust, ipo, hinge, simpo "
                      "(reference-free), listwise (Plackett-Luce over a ranking), all_pairs (DPO on every pair "
                      "of a ranking); pairwise losses use every strict pair of a ranking",
                      choices=("sigmoid", "robust", "ipo", "hinge", "simpo", "listwise", "all_pairs"))
    beta: float = param(0.1, "β: strength of the KL regularisation (simpo: its own scale, e.g. 2.5)", gt=0)
    label_smoothing: float = param(0.0, "ε: assumed label-flip rate (sigmoid → cDPO; robust: rDPO)", min=0, max=0.49)
    simpo_gamma: float = param(1.375, "SimPO's target reward margin γ", min=0)
    sft_coef: float = param(0.0, "α: adds α · mean token NLL of the best-ranked (chosen) response (RPO, Pang et al. "
                            "2024); 0 = off", min=0)
    dpop_lambda: float = param(0.0, "λ of DPO-Positive (Pal et al. 2024; sigmoid and listwise): the chosen answer's "
                               "implicit reward loses βλ·max(0, log π_ref − log π), so its likelihood may not fall "
                               "below the reference's (paper: 50); 0 = off", min=0)
    # data
    max_length: int = param(256, "tokens of prompt + response (longer responses are cut at the end; a record "
                            "whose responses are the same within it is dropped, and counted)", min=8)
    heldout_fraction: float = param(0.05, "fraction of prompts held out for validation", gt=0, max=0.5)
    # optimisation
    batch_size: int = param(8, "prompts per micro-batch (chosen and rejected go through one forward pass)", min=1)
    grad_accum: int = param(1, "micro-batches per optimizer step", min=1)
    epochs: float = param(2.0, "passes over the data (used when max_steps = 0)", gt=0)
    max_steps: int = param(0, "optimizer steps (0 = from epochs)", min=0)
    lr: float = param(5e-5, "peak learning rate (AdamW)", gt=0)
    min_lr_ratio: float = param(0.1, "final learning rate as a fraction of the peak (cosine decay)", min=0, max=1)
    warmup_steps: int = param(10, "linear warm-up steps", min=0)
    weight_decay: float = param(0.0, "AdamW weight decay (not applied to norms, biases, embeddings)", min=0)
    # bookkeeping
    eval_every: int = param(100, "steps between validation evaluations", min=1)
    eval_batch_size: int = param(64, "sequences per forward pass when precomputing reference log-probs", min=1)
    seed: int = param(0, "seed for the data order", min=0)


@dataclass
class PPOConfig(EngineConfig):
    """RLHF with PPO: the policy against a reward, with a per-token KL penalty to the reference (SFT) model."""
    # inputs / outputs
    model: str = param("", "HF causal-LM dir of the policy to start from (e.g. runs/demo/sft/model); also the "
                       "reference")
    rm: str = param("", "reward-model dir from `alignkit rm` (needed by the 'rm' reward and value_model=rm)")
    reward: str = param("rm", "reward: rm, oracle (the world's gold judge: a ceiling experiment), module:function, "
                        "or a weighted sum such as 'rm + 0.5*my_pkg.checks:reward'")
    prompts: str = param("world", "'world' for the built-in train prompts, or a JSONL/Parquet/datasets dir of "
                         "{prompt, ...} records (the other fields go to Python reward functions)")
    out: str = param("runs/ppo", "output dir: model/, value/, state/, metrics.jsonl, summary.json")
    # rollout
    rollout_batch: int = param(64, "prompts sampled per PPO iteration (one response each)", min=1)
    max_new_tokens: int = param(48, "tokens per response at most", min=1)
    temperature: float = param(0.7, "sampling temperature; every log-prob (ratio, KL) uses it", gt=0)
    normalize_reward: bool = param(True, "use the reward model's stored normalisation (SFT samples score mean 0, "
                                   "std 1); false: its raw score")
    missing_eos_penalty: float = param(1.0, "subtracted from the reward of a response cut at max_new_tokens", min=0)
    # reward shaping
    kl_coef: float = param(0.05, "β: per-token KL penalty −β·(log π_old − log π_ref) in the reward (initial β "
                           "when kl_target > 0)", min=0)
    kl_target: float = param(0.0, "target KL per response (nats) of the adaptive controller; 0 = fixed β", min=0)
    kl_horizon: int = param(10000, "horizon (episodes) of the adaptive KL controller", min=1)
    kl_estimator: str = param("k1", "per-token KL estimate in the reward", choices=("k1", "k3"))
    whiten_rewards: bool = param(False, "scale rewards by their std over the batch (mean kept)")
    gamma: float = param(1.0, "discount γ of GAE", min=0, max=1)
    lam: float = param(0.95, "λ of GAE", min=0, max=1)
    # losses
    clip: float = param(0.2, "ε: clip range of the policy ratio", gt=0)
    value_clip: float = param(0.2, "ε_v: clip range of the value update around the rollout's values (0 = off)",
                              min=0)
    vf_coef: float = param(0.1, "weight of the value loss", min=0)
    ptx_coef: float = param(0.0, "γ of PPO-ptx: weight of a pretraining (next-token) loss on world text mixed into "
                            "each update (InstructGPT); 0 = plain PPO", min=0)
    ptx_batch: int = param(4, "pretraining blocks per update when ptx_coef > 0", min=1)
    ptx_data: str = param("world", "pretraining text for PPO-ptx: 'world' (the built-in corpus) or a JSONL/Parquet/"
                          "datasets dir of {text} records")
    value_model: str = param("rm", "the critic: rm (a separate model initialised from the reward model, as "
                             "InstructGPT), policy (a separate copy of the policy with a zero head) or shared (a "
                             "zero-initialised head on the policy's own trunk: one model, one forward pass)",
                             choices=("rm", "policy", "shared"))
    # optimisation
    steps: int = param(60, "PPO iterations (rollout + updates)", min=1)
    ppo_epochs: int = param(4, "passes over each rollout batch", min=1)
    minibatch: int = param(16, "responses per PPO minibatch (one optimizer step each)", min=1)
    lr: float = param(1e-5, "learning rate of the policy (AdamW, linear decay to 0)", gt=0)
    value_lr: float = param(5e-5, "learning rate of the value model", gt=0)
    # bookkeeping
    snapshots: list[int] = param([], "iterations after which the policy is also saved to out/snapshots/step-<n>/model "
                                 "(`alignkit run` evaluates them: the reward-vs-KL path along training)", min=1)
    seed: int = param(0, "seed for the prompt order and sampling", min=0)


@dataclass
class GRPOConfig(EngineConfig):
    """GRPO and the critic-free family: G responses per prompt, each judged against its own group."""
    # inputs / outputs
    model: str = param("", "HF causal-LM dir of the policy to start from (e.g. runs/demo/sft/model); also the "
                       "reference")
    rm: str = param("", "reward-model dir from `alignkit rm` (needed by the 'rm' reward)")
    reward: str = param("rm", "reward: rm, oracle (a ceiling experiment), module:function — e.g. "
                        "alignkit.world.checkers:arithmetic — or a weighted sum such as 'rm + alignkit.world.checkers:ending'")
    prompts: str = param("world", "'world' for the built-in train prompts, or a JSONL/Parquet/datasets dir of "
                         "{prompt, ...} records (the other fields go to reward functions)")
    categories: list[str] = param([], "world prompts: only these task categories (empty = all)")
    out: str = param("runs/grpo", "output dir: model/, state/, metrics.jsonl, summary.json")
    # sampling
    group_size: int = param(4, "G: responses sampled per prompt", min=2)
    prompts_per_step: int = param(16, "prompts per step (G responses each)", min=1)
    max_new_tokens: int = param(48, "tokens per response at most (L_max)", min=1)
    temperature: float = param(0.7, "sampling temperature; every log-prob uses it", gt=0)
    dynamic_sampling: bool = param(False, "DAPO: drop groups whose rewards are all equal (no signal) and sample "
                                   "more prompts to refill the step, up to 3 extra rounds")
    mask_truncated: bool = param(False, "DAPO: no loss on responses cut at max_new_tokens")
    overlong_cache: int = param(0, "DAPO's soft overlong penalty: the last this-many tokens before "
                                "max_new_tokens ramp the reward down to −1 (0 = off)", min=0)
    # the objective
    advantage: str = param("grpo", "grpo (group mean / std), dr_grpo (mean only), rloo (leave-one-out), reinforce_pp "
                           "(group mean, batch std)", choices=("grpo", "dr_grpo", "rloo", "reinforce_pp"))
    std: str = param("unbiased", "std of the advantage: unbiased (n − 1, as TRL and verl) or population",
                     choices=("unbiased", "population"))
    loss_agg: str = param("seq_mean_token_mean", "seq_mean_token_mean (GRPO), token_mean (DAPO), "
                          "seq_mean_token_sum_norm (Dr. GRPO: / (responses · max_new_tokens))",
                          choices=("seq_mean_token_mean", "token_mean", "seq_mean_token_sum_norm"))
    beta: float = param(0.04, "β of the k3 KL to the reference, in the loss (DeepSeekMath: 0.04); 0 = no "
                        "reference model", min=0)
    clip: float = param(0.2, "ε_low: clip range of the ratio below 1", gt=0)
    clip_high: float = param(0.0, "ε_high above 1 (DAPO's clip-higher, e.g. 0.28); 0 = same as clip", min=0)
    mu: int = param(1, "μ: optimisation passes over each step's samples (old log-probs kept when > 1)", min=1)
    minibatch: int = param(0, "responses per optimizer step within a pass (0 = the whole step)", min=0)
    # optimisation
    steps: int = param(40, "GRPO steps (sample + update)", min=1)
    lr: float = param(1e-5, "learning rate (AdamW, linear decay to 0)", gt=0)
    # bookkeeping
    seed: int = param(0, "seed for the prompt order and sampling", min=0)


@dataclass
class EvalConfig:
    """Held-out world prompts, sampled and judged by the oracle (``alignkit eval``)."""
    categories: list[str] = param([], "task categories to evaluate (empty = all)")
    n_per_category: int = param(40, "held-out prompts per category (at most the world's heldout_per_category)",
                                min=1)
    max_new_tokens: int = param(48, "tokens sampled per response", min=1)
    temperature: float = param(0.7, "sampling temperature; KL is estimated at the same temperature", gt=0)
    top_p: float = param(1.0, "nucleus sampling (keep 1.0: the KL estimate assumes the full softmax)", gt=0, max=1)
    batch_size: int = param(64, "prompts per generation batch", min=1)
    seed: int = param(0, "sampling seed", min=0)
    device: str = param("auto", "cpu, cuda, or auto", choices=("auto", "cpu", "cuda"))
    shots: int = param(4, "in-context examples for the base model's few-shot mode", min=1)
    tie_margin: float = param(0.01, "gold-score difference under which two responses tie (win rate)", min=0)
    mode: str = param("chat", "how the model is prompted: chat template, or a base model's zero_shot / few_shot",
                      choices=("chat", "zero_shot", "few_shot"))
    out: str = param("", "where summary.json and samples.jsonl go (default: <model dir>/../eval)")
    overwrite: bool = param(False, "replace an earlier evaluation in `out` (refused otherwise)")
    progress: bool = param(True, "show a progress bar")


@dataclass
class BonConfig:
    """Best-of-n: sample n responses per held-out prompt, keep the one the reward model scores highest."""
    model: str = param("", "policy dir (e.g. runs/demo/sft/model)")
    rm: str = param("", "reward-model dir (e.g. runs/demo/rm/model)")
    out: str = param("runs/bon", "output dir: summary.json (with the curve over n) and best_of_<largest n>/samples.jsonl")
    n: list[int] = param([1, 2, 4, 8, 16], "values of n (the largest is sampled; smaller n use its first samples)",
                         min=1)
    batch_size: int = param(64, "sequences per generation / scoring batch", min=1)
    device: str = param("auto", "cpu, cuda, or auto", choices=("auto", "cpu", "cuda"))
    overwrite: bool = param(False, "replace what an earlier run wrote in `out`")
    eval: EvalConfig = section(EvalConfig, "held-out prompts and sampling settings (as for `alignkit eval`)")


@dataclass
class GenerateConfig:
    """Sampling from a model dir (``alignkit generate``)."""
    max_new_tokens: int = param(64, "tokens to sample at most", min=1)
    temperature: float = param(0.7, "sampling temperature (0 = greedy)", min=0)
    top_p: float = param(1.0, "nucleus sampling: keep the smallest set of tokens with this much mass", gt=0, max=1)
    top_k: int = param(0, "keep only the k most likely tokens (0 = off)", min=0)
    n: int = param(1, "samples per prompt", min=1)
    seed: int = param(0, "sampling seed", min=0)
    chat: bool = param(False, "wrap the prompt in the tokenizer's chat template as a user turn")


@dataclass
class ChatConfig:
    """A terminal chat with a model dir (``alignkit chat``)."""
    max_new_tokens: int = param(128, "tokens per reply at most", min=1)
    temperature: float = param(0.7, "sampling temperature (0 = greedy)", min=0)
    top_p: float = param(1.0, "nucleus sampling", gt=0, max=1)
    top_k: int = param(0, "keep only the k most likely tokens (0 = off)", min=0)
    seed: int = param(0, "sampling seed", min=0)
    system: str = param("", "a system message opening the conversation (empty = none)")


@dataclass
class ArenaConfig:
    """The arena's server (``alignkit arena``): people compare two anonymous models' answers and vote."""
    models: list[str] = param([], "the models to compare, at least two: HF causal-LM dirs, each DIR or name=DIR "
                              "(the name the leaderboard shows; default: the dir as given)")
    few_shot: list[str] = param([], "names among models= of base models, prompted with the built-in world's "
                                "few-shot exemplars instead of a chat template (needs prompts=world)")
    votes: str = param("arena.db", "SQLite file of battles and votes: created when missing, else continued")
    prompts: str = param("world", "what the Random prompt button draws from: world (the built-in world's train "
                         "prompts), a file of {prompt} records, or none")
    host: str = param("127.0.0.1", "address to listen on (0.0.0.0: every interface; set token= then)")
    port: int = param(8000, "port to listen on", min=1, max=65535)
    allowed_hosts: list[str] = param([], "Host headers the server answers (a guard against DNS rebinding); empty = "
                                     "127.0.0.1, localhost and [::1] when host= is one of them, any otherwise; * = any")
    token: str = param("", "if set, starting a battle and voting need the header X-Arena-Token: <token> (the page "
                       "sends it when opened as /?token=<token>): only invited labellers vote")
    max_prompt_chars: int = param(4000, "longest prompt accepted, in characters", min=1)
    max_new_tokens: int = param(48, "tokens per answer at most", min=1)
    temperature: float = param(0.7, "sampling temperature of the answers (0 = greedy)", min=0)
    shots: int = param(4, "exemplars in a few_shot model's prompt", min=1)
    batch_size: int = param(32, "answers a model generates together at most", min=1)
    device: str = param("auto", "cpu, cuda, or auto", choices=("auto", "cpu", "cuda"))
    dtype: str = param("float32", "dtype the models are loaded in", choices=("auto", "float32", "bfloat16", "float16"))
    trust_remote_code: bool = param(False, "run Python code shipped in a model dir (only for models you trust)")
    seed: int = param(0, "seed of the model draws, sides, random prompts and sampling", min=0)
    log_level: str = param("warning", "uvicorn's log level (info logs every request)",
                           choices=("critical", "error", "warning", "info", "debug"))


@dataclass
class ArenaLeaderboardConfig:
    """The leaderboard of an arena's votes (``alignkit arena leaderboard``)."""
    votes: str = param("arena.db", "the arena's SQLite file")
    tie_model: str = param("davidson", "how ties and both-bad votes count: Davidson or Rao-Kupper",
                           choices=("davidson", "rao_kupper"))
    bootstrap: int = param(200, "bootstrap resamples of the votes for the 95% intervals", min=1)
    seed: int = param(0, "seed of the bootstrap", min=0)
    json: bool = param(False, "print the leaderboard as JSON (as GET /api/leaderboard) instead of a table")


@dataclass
class ArenaExportConfig:
    """An arena's votes as record-schema JSONL (``alignkit arena export``)."""
    votes: str = param("arena.db", "the arena's SQLite file")
    out: str = param("", "output dir: pairs.jsonl (A / B votes) and labels.jsonl (tie / both_bad)")
    overwrite: bool = param(False, "write over pairs.jsonl and labels.jsonl already in out")


@dataclass
class ArenaSimulateConfig:
    """Simulated voters: the built-in world's labellers vote through the arena's HTTP API."""
    url: str = param("http://127.0.0.1:8000", "the arena's address")
    voters: int = param(4, "voters voting at the same time (each a thread with its own cookie)", min=1)
    votes: int = param(100, "votes to cast in all", min=1)
    token: str = param("", "the arena's token, if it has one")
    seed: int = param(0, "voter i's labeller is seeded seed + i", min=0)
    labeller_temperature: float = param(0.25, "noise of the labellers: P(a ≻ b) = σ((gold_a - gold_b) / T)", min=0)
    tie_margin: float = param(0.05, "gold scores closer than this may be voted a tie", min=0)
    both_bad_threshold: float = param(-0.3, "two answers both scoring below this are voted both_bad", min=-1, max=1)
    timeout: float = param(120.0, "seconds an HTTP request may take", gt=0)
    out: str = param("", "also write the statistics as JSON to this file (empty = print only)")


@dataclass
class RunConfig:
    """The recipe so far: world → tokenizer → pretrain → SFT → evaluation → preferences → reward model → best-of-n
    → DPO → PPO → GRPO."""
    name: str = param("demo", "run name: everything goes to <runs_dir>/<name>/")
    runs_dir: str = param("runs", "parent folder of runs")
    preset: str = param("tiny", "preset the run was built from (set by --preset)")
    world: WorldConfig = section(WorldConfig, "the built-in world")
    tokenizer: TokenizerConfig = section(TokenizerConfig, "tokenizer training")
    pretrain: PretrainConfig = section(PretrainConfig, "pretraining")
    sft: SFTConfig = section(SFTConfig, "supervised fine-tuning (model and data are set by the run)")
    eval: EvalConfig = section(EvalConfig, "evaluation of base (zero-/few-shot) and SFT on held-out prompts")
    prefs: PrefsConfig = section(PrefsConfig, "preference collection from the SFT model (model and out are set "
                                 "by the run)")
    rm: RMConfig = section(RMConfig, "reward model on the collected rankings (model and data are set by the run)")
    rm_prior: bool = param(True, "the reward model adds the SFT model's surprise at the response (rm.prior = the "
                           "SFT model; see `alignkit rm --help`)")
    rm_pairs: bool = param(True, "also train a reward model on the pairwise comparisons alone (pairs.jsonl + "
                           "labels.jsonl, rm's keys) and evaluate it like the run's: pairs against rankings on the "
                           "same answers (about 100 s of one worker on the tiny preset)")
    rm_curve: list[int] = param([125, 250, 500, 1000], "labelled-prompt counts of the data-efficiency curve: a "
                                "reward model on pairs and one on rankings per count (empty = no curve)", min=2)
    rm_curve_epochs: float = param(2.0, "epochs of each reward model of the data-efficiency curve (2: as the run's "
                                   "reward model, rm.epochs)", gt=0)
    rm_curve_steps: int = param(0, "optimizer steps of each reward model of the curve, whatever its subset's size "
                                "(0 = rm_curve_epochs passes over its subset)", min=0)
    rm_curve_seeds: int = param(3, "seeds of the data-efficiency curve (rm.seed on): each draws other nested subsets, "
                                "initialisations and data orders; each point is their mean", min=1)
    bon: BonConfig = section(BonConfig, "best-of-n with the reward model (model, rm and eval are set by the run)")
    dpo: DPOConfig = section(DPOConfig, "DPO on the collected rankings (model, data and out are set by the run)")
    dpo_betas: list[float] = param([0.03, 0.1, 0.3], "values of dpo.beta trained and evaluated for the reward-vs-KL "
                                   "frontier, as dpo_beta_<β> (the one equal to dpo.beta is the run's `dpo`; "
                                   "empty = none)", gt=0)
    dpo_rounds: int = param(1, "DPO rounds: each after the first collects preferences (prefs's keys, heldout_k 0, "
                            "seed = round − 1) on the previous round's answers and trains the next round from that "
                            "policy, its reference (dpo's keys); evaluated as dpo_round_<r>", min=1)
    ppo: PPOConfig = section(PPOConfig, "PPO on the world's train prompts against the reward model (model, rm and out "
                             "are set by the run)")
    run_ppo: bool = param(True, "train and evaluate PPO")
    ppo_rounds: int = param(1, "PPO rounds (iterated online RLHF): each after the first collects preferences (prefs's "
                            "keys, heldout_k 0, seed = round − 1) on the previous round's answers, trains a reward "
                            "model on every round's preferences (rm's keys) and PPO on from that policy, its "
                            "reference (ppo's keys); evaluated as ppo_round_<r>", min=1)
    ppo_ptx_coef: float = param(1.0, "γ of the PPO-ptx run beside plain PPO (ppo's keys with ptx_coef = γ, on the "
                                "world's pretraining corpus, without snapshots); 0 = no PPO-ptx run", min=0)
    grpo: GRPOConfig = section(GRPOConfig, "GRPO on the world's train prompts with the reward model (model, rm, "
                               "reward and out are set by the run); its keys also drive the verifiable-reward run")
    grpo_checker: str = param("alignkit.world.checkers:arithmetic", "reward of the verifiable-reward GRPO run "
                              "(empty = no such run)")
    grpo_checker_categories: list[str] = param(["arithmetic"], "world categories of the verifiable-reward GRPO run")
    grpo_checker_draws: int = param(4, "samples per held-out prompt when the verifiable-reward run's accuracy is "
                                    "measured (SFT before, the trained policy after)", min=1)
    run_grpo: bool = param(True, "train and evaluate GRPO (with the reward model, and with the checker)")
    workers: int = param(0, "stages after SFT that do not depend on each other run in this many processes at once "
                         "(each with cpus / workers torch threads); 0 = auto: 2 on a CPU with 2 or more cores, 1 "
                         "with a GPU", min=0)
    report: bool = param(True, "write runs/<name>/report.html and report.md at the end, with their figures "
                         "(win_rate, frontier, overoptimisation, rm_curve, training .png)")


# ----------------------------------------------------------------------------------------------------
# Loading and validation

def load_config(cls: type, *, config_file: str | Path | None = None, overrides: list[str] | tuple = (),
                base: dict | None = None) -> Any:
    """Build a validated ``cls`` from defaults, a base mapping, a YAML file and ``key=value`` overrides."""
    values: dict = {}
    if base:
        _merge(values, base)
    from_file: set = set()
    if config_file is not None:
        read = read_yaml(config_file)
        from_file = _dotted(read)
        _merge(values, read)
    from_cli: set = set()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' is not key=value")
        nested = _nest(key.strip(), _parse_scalar(raw))
        from_cli |= _dotted(nested)
        _merge(values, nested)

    def origin(key: str) -> str:
        """The file a bad key came from, for its error (none for a key=value of the command line)."""
        within = lambda keys: any(k == key or k.startswith(key + ".") for k in keys)  # noqa: E731
        return f" in {config_file}" if within(from_file) and not within(from_cli) else ""

    return _build(cls, values, prefix="", origin=origin)


def _dotted(values: dict, prefix: str = "") -> set:
    """The dotted names of every key of a nested mapping: {'a': {'b': 1}} → {'a', 'a.b'}."""
    out = set()
    for k, v in values.items():
        out.add(f"{prefix}{k}")
        if isinstance(v, dict):
            out |= _dotted(v, f"{prefix}{k}.")
    return out


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a mapping of key: value, got {type(data).__name__}")
    return data


def preset_file(preset: str, stage: str) -> Path:
    """``alignkit/configs/<preset>/<stage>.yaml``; an unknown preset is a ConfigError."""
    available = sorted(p.name for p in PRESETS_DIR.iterdir() if p.is_dir())
    if preset not in available:
        raise ConfigError(f"unknown preset '{preset}'; available: {', '.join(available)}")
    return PRESETS_DIR / preset / f"{stage}.yaml"


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


def describe(cls: type, prefix: str = "", values: Any = None) -> str:
    """One line per key: name, default (or its value in ``values``, a ``cls`` such as a preset's), help, allowed
    values (used by ``--help``)."""
    lines = []
    own = cls.__dict__.get("__annotations__", {})
    for f in sorted(fields(cls), key=lambda f: f.name not in own):  # the stage's own keys first
        if f.metadata.get("section"):
            lines.append(f"  [{prefix}{f.name}]  {f.metadata['help']}")
            lines.append(describe(f.default_factory, prefix=f"{prefix}{f.name}.",
                                  values=getattr(values, f.name) if values is not None else None))
            continue
        if values is not None:
            default = getattr(values, f.name)
        else:
            default = f.default if f.default is not MISSING else f.default_factory()
        allowed = _allowed(f)
        lines.append(f"  {prefix}{f.name}={default!r}  {f.metadata.get('help', '')}"
                     + (f" [{allowed}]" if allowed else ""))
    return "\n".join(lines)


def _merge(into: dict, new: dict) -> None:
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(into.get(k), dict):
            _merge(into[k], v)
        else:
            into[k] = v


def _nest(dotted: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(dotted.split(".")):
        out = {part: out}
    return out


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        return raw


def _build(cls: type, values: dict, prefix: str, origin: Callable[[str], str]) -> Any:
    known = {f.name: f for f in fields(cls)}
    for key in values:
        if key not in known:
            hint = difflib.get_close_matches(str(key), known, n=1)
            suggestion = f"; did you mean '{prefix}{hint[0]}'?" if hint else f"; allowed: {', '.join(known)}"
            raise ConfigError(f"unknown key '{prefix}{key}'{origin(f'{prefix}{key}')}{suggestion}")
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for name, f in known.items():
        key = f"{prefix}{name}"
        if f.metadata.get("section"):
            sub = values.get(name, {})
            if not isinstance(sub, dict):
                raise ConfigError(f"key '{key}'{origin(key)} must be a section of key: value pairs")
            kwargs[name] = _build(hints[name], sub, f"{key}.", origin)
        elif name in values:
            kwargs[name] = _check(f, hints[name], values[name], key, origin(key))
    return cls(**kwargs)


def _check(f: dataclasses.Field, typ: Any, value: Any, key: str, origin: str) -> Any:
    value = _coerce(typ, value, key, origin)
    m = f.metadata
    bad = None
    if m.get("choices") is not None and value not in m["choices"]:
        bad = f"one of {', '.join(map(str, m['choices']))}"
    else:  # bounds apply to a number, and to each number of a list
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                too_low = (m.get("min") is not None and v < m["min"]) or (m.get("gt") is not None and v <= m["gt"])
                if too_low or (m.get("max") is not None and v > m["max"]):
                    bad = _allowed(f) + (" each" if isinstance(value, list) else "")
    if bad:
        raise ConfigError(f"key '{key}'{origin} must be {bad}, got {value!r}")
    return value


def _coerce(typ: Any, value: Any, key: str, origin: str) -> Any:
    origin_t = typing.get_origin(typ)
    if origin_t in (typing.Union, types.UnionType):
        args = typing.get_args(typ)
        if value is None and type(None) in args:
            return None
        typ = next(a for a in args if a is not type(None))
        origin_t = typing.get_origin(typ)
    want = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string", list: "a list"}
    base = origin_t or typ
    ok = False
    if base is bool:
        ok = isinstance(value, bool)
    elif base is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif base is float:
        if isinstance(value, str):  # YAML reads "1e-3" as a string
            try:
                value = float(value)
            except ValueError:
                pass
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif base is str:
        ok = isinstance(value, str) or isinstance(value, (int, float)) and not isinstance(value, bool)
        value = str(value) if ok else value
    elif base is list:
        if isinstance(value, str):
            value = [_parse_scalar(v.strip()) for v in value.split(",") if v.strip()]
        ok = isinstance(value, list)
        (item,) = typing.get_args(typ) or (None,)
        if ok and item is not None:  # list[int] etc.: each element checked (and coerced) like a key of that type
            try:
                value = [_coerce(item, v, key, origin) for v in value]
            except ConfigError:
                raise ConfigError(f"key '{key}'{origin} must be a list of {_PLURAL[item]}, got {value!r}") from None
    if not ok:
        raise ConfigError(f"key '{key}'{origin} must be {want.get(base, str(base))}, got {value!r}")
    return value


_PLURAL = {int: "integers", float: "finite numbers", str: "strings", bool: "true or false values"}


def _allowed(f: dataclasses.Field) -> str:
    m = f.metadata
    if m.get("choices") is not None:
        return "one of " + ", ".join(map(str, m["choices"]))
    lo = f">= {m['min']}" if m.get("min") is not None else (f"> {m['gt']}" if m.get("gt") is not None else "")
    hi = f"<= {m['max']}" if m.get("max") is not None else ""
    return " and ".join(p for p in (lo, hi) if p)


def is_config(obj: Any) -> bool:
    return is_dataclass(obj) and not isinstance(obj, type)
