"""Helpers of the arena's tests: an arena served by a real uvicorn on 127.0.0.1, workers on tiny models, and a
test double of a model worker whose answers the test writes and releases (for states a fast model passes
too quickly)."""

import contextlib
import threading
import time

from alignkit.serve.arena.app import Arena, create_app
from alignkit.serve.arena.engine import ModelSpec, ModelWorker
from alignkit.serve.arena.server import free_port
from alignkit.serve.arena.store import BattleError, Side, Store


@contextlib.contextmanager
def serving(arena: Arena):
    """``arena`` served by uvicorn on a free 127.0.0.1 port in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(arena), host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def real_workers(model_dirs, world, *, max_new_tokens=6, names=("m0", "m1", "m2")) -> list[ModelWorker]:
    from alignkit.models.load import load_model

    workers = []
    for i, (name, path) in enumerate(zip(names, model_dirs)):
        model, tokenizer = load_model(path)
        workers.append(ModelWorker(ModelSpec(name, str(path)), model, tokenizer, max_new_tokens=max_new_tokens,
                                   temperature=0.7, batch_size=8, seed=i))
    return workers


class HeldWorker:
    """A stand-in for ModelWorker: its answer is ``answer`` (text pieces), sent when the test calls release()
    — or at once with ``hold=False``."""

    def __init__(self, name: str, answer: list[str], *, hold: bool = False):
        self.spec = ModelSpec(name, f"/models/{name}")
        self.side = Side(name, f"/models/{name}", "0" * 64)
        self.answer, self.hold = answer, hold
        self.jobs = []
        self.limit = 10_000
        self.sampling = {"mode": "chat", "temperature": 1.0, "max_new_tokens": 8}

    def encode(self, prompt: str) -> list[int]:
        if len(prompt) > self.limit:
            raise BattleError(400, "the prompt is too long for the models")
        return [1]

    def submit(self, job) -> None:
        self.jobs.append(job)
        if not self.hold:
            self._answer(job)

    def release(self) -> None:
        for job in self.jobs:
            if not job.done:
                self._answer(job)

    def _answer(self, job) -> None:
        for piece in self.answer:
            job.on_text(piece)
        job.done = True
        job.on_done("".join(self.answer).strip(), None)

    def stop(self) -> None:
        pass

    def join(self, timeout: float = 30.0) -> None:
        pass

    def close(self) -> None:
        pass


class FailingStore(Store):
    """A store whose first ``fails`` finish_battle calls raise, as a locked or full disk would."""

    def __init__(self, path, fails: int = 1):
        super().__init__(path)
        self.fails = fails

    def finish_battle(self, *args) -> None:
        if self.fails > 0:
            self.fails -= 1
            raise OSError("database is locked")
        super().finish_battle(*args)


def held_arena(tmp_path, answers=(["Hello", " there."], ["Hi", "!"]), *, hold=False, **kw) -> Arena:
    workers = [HeldWorker(f"w{i}", list(a), hold=hold) for i, a in enumerate(answers)]
    return Arena(workers, Store(tmp_path / "arena.db"), ["What is 2 + 2?", "Tell me a story."], **kw)
