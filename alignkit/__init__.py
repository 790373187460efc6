"""alignkit: the ChatGPT recipe (pretrain → SFT → RM → PPO / DPO / GRPO), small enough to read and run on a laptop."""

__version__ = "0.1.0"
