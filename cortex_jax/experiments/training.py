"""Training an IEM on a token dataset: one program for a CPU, a GPU, 8 devices or a pod.

The batch of token ids is sharded over the `data` axis of a mesh of every device of every
process; parameters are replicated; E is looked up in the codebook on device (never stored).
`train_step` is pure and jitted with donated state, so the same code runs on one device or many
and gives the same numbers (BatchNorm statistics are over the global batch either way).

Checkpoints (orbax): `checkpoints/latest` every `checkpoint_every` steps, asynchronously, for
resuming after a kill; `checkpoints/best`, the lowest validation loss. Batches and dropout are
pure functions of (seed, step), so a resumed run equals an uninterrupted one. The workdir may be
a gs:// URL: orbax writes its checkpoints to the bucket directly, and metrics.jsonl and the
TensorBoard events go there whole (`io.events`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
from collections.abc import Callable
from typing import Any, Literal, cast

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from etils import epath

from cortex_jax.core import errors, paths, sharding
from cortex_jax.io import events, folders, shards
from cortex_jax.models import iem

Array = jax.Array
TOPK = (1, 3, 5, 10)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Attributes:
    batch_size: global batch over all devices.
    epochs: passes over the training split.
    optimizer: "adam_step" (Adam + L2 weight decay, ×0.1 every `decay_every` epochs: CE/RE) or
      "adamw_cosine" (AdamW, `warmup` share of steps linear warm-up, then cosine: TE).
    learning_rate, weight_decay, decay_every, warmup: as named.
    dtype: compute dtype ("float32" or "bfloat16"); parameters stay float32.
    eval_every, checkpoint_every: in steps (0 → once per epoch).
    seed: batches, dropout and init.
    """

    batch_size: int = 512
    epochs: int = 80
    optimizer: Literal["adam_step", "adamw_cosine"] = "adam_step"
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    decay_every: int = 20
    warmup: float = 0.1
    dtype: Literal["float32", "bfloat16"] = "float32"
    eval_every: int = 0
    checkpoint_every: int = 0
    seed: int = 0


@flax.struct.dataclass
class TrainState:
    step: Array
    params: Any
    batch_stats: Any
    opt_state: Any


def create_optimizer(cfg: TrainConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    total = cfg.epochs * steps_per_epoch
    if cfg.optimizer == "adam_step":
        sched = optax.exponential_decay(
            cfg.learning_rate, cfg.decay_every * steps_per_epoch, 0.1, staircase=True
        )
        # torch's Adam(weight_decay=…) adds wd·θ to the gradient before the moments.
        return optax.chain(optax.add_decayed_weights(cfg.weight_decay), optax.adam(sched))
    if cfg.optimizer == "adamw_cosine":
        warm = max(1, int(cfg.warmup * total))
        sched = optax.warmup_cosine_decay_schedule(
            0.0, cfg.learning_rate, warm, max(total, warm + 1)
        )
        return optax.adamw(sched, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected adam_step or adamw_cosine")


def topk_correct(logits: Array, labels: Array, valid: Array | None = None) -> dict[str, Array]:
    """Number of examples whose label is among the top-k logits, k in TOPK (only the `valid`
    ones, a (batch,) bool mask, when given)."""
    rank = jnp.sum(logits > jnp.take_along_axis(logits, labels[:, None], -1), axis=-1)
    w = jnp.ones(rank.shape, jnp.int32) if valid is None else valid.astype(jnp.int32)
    return {f"top{k}": jnp.sum((rank < k) * w) for k in TOPK}


class Trainer:
    """Builds the sharded state and the jitted train/eval steps for one IEM and codebook."""

    def __init__(
        self,
        model_config: iem.IEMConfig,
        cfg: TrainConfig,
        codebook: Any,
        grid_size: int,
        steps_per_epoch: int,
        mesh=None,
    ):
        self.model_config, self.cfg = model_config, cfg
        self.mesh = mesh or sharding.data_mesh()
        sharding.check_batch_divides(cfg.batch_size, self.mesh)
        dtype = jnp.dtype(cfg.dtype)
        self.model = iem.create_model(model_config, dtype)
        self.tx = create_optimizer(cfg, steps_per_epoch)
        rep, bat = sharding.replicated(self.mesh), sharding.batch_sharded(self.mesh)
        self.codebook = jax.device_put(jnp.asarray(codebook, jnp.float32), rep)
        d = self.codebook.shape[1]

        def init(rng):
            v = iem.init_variables(model_config, rng, grid_size, d)
            return TrainState(
                jnp.zeros((), jnp.int32),
                v["params"],
                v.get("batch_stats", {}),
                self.tx.init(v["params"]),
            )

        abstract = jax.eval_shape(init, jax.random.PRNGKey(0))
        self.state_sharding = jax.tree_util.tree_map(lambda _: rep, abstract)
        # shapes, dtypes and shardings of the state, for restoring without initialising
        self.abstract_state = jax.tree_util.tree_map(
            lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
            abstract,
            self.state_sharding,
        )
        self._init = jax.jit(init, out_shardings=self.state_sharding)
        self.train_step = jax.jit(
            self._train_step,
            in_shardings=(self.state_sharding, bat, bat),
            out_shardings=(self.state_sharding, rep),
            donate_argnums=(0,),
        )
        self.eval_step = jax.jit(
            self._eval_step, in_shardings=(self.state_sharding, bat, bat, bat), out_shardings=rep
        )

    def init_state(self) -> TrainState:
        return self._init(jax.random.PRNGKey(self.cfg.seed))

    def _train_step(self, state: TrainState, tokens: Array, labels: Array):
        e = self.codebook[tokens.astype(jnp.int32)]
        rng = jax.random.fold_in(jax.random.PRNGKey(self.cfg.seed + 1), state.step)

        def loss_fn(params):
            logits, upd = self.model.apply(
                {"params": params, "batch_stats": state.batch_stats},
                e,
                train=True,
                rngs={"dropout": rng},
                mutable=["batch_stats"],
            )
            loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
            return loss, (logits, upd.get("batch_stats", state.batch_stats))

        (loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        acc = jnp.mean(jnp.argmax(logits, -1) == labels)
        new = TrainState(state.step + 1, params, stats, opt_state)
        return new, {"loss": loss, "accuracy": acc}

    def _eval_step(self, state: TrainState, tokens: Array, labels: Array, valid: Array):
        """Sums over the `valid` examples of the batch (the rest is padding)."""
        e = self.codebook[tokens.astype(jnp.int32)]
        logits = cast(
            Array,
            self.model.apply(
                {"params": state.params, "batch_stats": state.batch_stats}, e, train=False
            ),
        )
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
        return {
            "loss_sum": jnp.sum(jnp.where(valid, ce, 0.0)),
            "count": jnp.sum(valid.astype(jnp.int32)),
            **topk_correct(logits, labels, valid),
        }

    def evaluate(self, state: TrainState, reader: shards.BatchReader) -> dict[str, float]:
        """Loss and top-k accuracy over every example of the split: one pass, the last partial
        batch padded and the padding masked out (`BatchReader.full_pass`)."""
        tot: dict[str, float] = {}
        for toks, labels, valid in reader.full_pass():
            batch = sharding.global_batch(self.mesh, (toks, labels, valid))
            for k, v in self.eval_step(state, *batch).items():
                tot[k] = tot.get(k, 0.0) + float(v)
        n = tot.pop("count")
        return {"val_loss": tot.pop("loss_sum") / n, **{f"val_{k}": v / n for k, v in tot.items()}}


def _barriers(name: str) -> ocp.options.MultiprocessingOptions:
    # Each manager its own barrier names: with several processes, two managers finishing saves
    # at once otherwise meet at one barrier ("… is already ongoing") and the run fails.
    return ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name)


def _managers(workdir: epath.Path, every: int):
    root = workdir / "checkpoints"
    root = root if paths.is_remote(root) else root.absolute()  # orbax wants absolute paths
    latest = ocp.CheckpointManager(
        root / "latest",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=2, save_interval_steps=every, multiprocessing_options=_barriers("latest")
        ),
    )
    best = ocp.CheckpointManager(
        root / "best",
        options=ocp.CheckpointManagerOptions(
            max_to_keep=1,
            best_fn=lambda m: m["val_loss"],
            best_mode="min",
            multiprocessing_options=_barriers("best"),
        ),
    )
    return latest, best


RUN_NAME = "run.json"


def run_fingerprint(
    model_config: iem.IEMConfig,
    cfg: TrainConfig,
    train_ds: shards.TokenDataset,
    val_ds: shards.TokenDataset,
    codebook: Any,
) -> dict[str, Any]:
    """What determines a training run's numbers: the model, the training settings (checkpoint
    cadence aside), both datasets (their metadata and sizes) and the codebook's bytes."""
    settings = dataclasses.asdict(cfg)
    settings.pop("checkpoint_every")
    cb = np.ascontiguousarray(np.asarray(codebook, np.float32))
    split = lambda ds: {"meta": ds.meta, "images": len(ds)}
    return json.loads(
        json.dumps(
            {
                "model": model_config.to_dict(),
                "train": settings,
                "train_data": split(train_ds),
                "val_data": split(val_ds),
                "codebook_sha256": hashlib.sha256(cb.tobytes()).hexdigest(),
            }
        )
    )


def _check_data(model_config: iem.IEMConfig, codebook: Any, *datasets: shards.TokenDataset):
    k = int(np.shape(codebook)[0])
    for ds in datasets:
        top = max(int(np.max(lab)) for lab in ds.labels if len(lab))
        if top >= model_config.n_classes:
            raise ValueError(
                f"{ds.folder} has labels up to {top} ({len(ds.class_names)} classes in its "
                f"meta.json) but the IEM has n_classes={model_config.n_classes}; train on a "
                "dataset of those classes (train.generate --classes concepts) or set n_classes"
            )
        ck = ds.meta.get("codebook_size")
        if ck is not None and ck != k:
            raise ValueError(f"{ds.folder} holds ids of a {ck}-entry codebook; the VQGAN has {k}")


def _flat(d: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(d, dict):
        return {prefix: d}
    out: dict[str, Any] = {}
    for k, v in d.items():
        out |= _flat(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def _claim_workdir(workdir: epath.Path, fingerprint: dict, fresh: bool) -> None:
    """Records the run's fingerprint beside its checkpoints, or checks that a resumed run is the
    same run; `fresh` deletes an earlier run's checkpoints and metrics first."""
    run_file = workdir / RUN_NAME
    if jax.process_index() == 0:
        if fresh:
            (workdir / "checkpoints").rmtree(missing_ok=True)
            (workdir / events.FOLDER).rmtree(missing_ok=True)
            for name in ("metrics.jsonl", RUN_NAME):
                (workdir / name).unlink(missing_ok=True)
        if run_file.exists():
            old = json.loads(run_file.read_text())
            if old != fingerprint:
                a, b = _flat(old), _flat(fingerprint)
                diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
                raise ValueError(
                    f"{workdir} holds another run (differs in {', '.join(diff[:6])}); pass "
                    "--fresh to start over there, or choose another --workdir"
                )
        else:
            if (workdir / "checkpoints").exists():  # written before run.json existed: adopt it
                warnings.warn(
                    f"{workdir} holds checkpoints without {RUN_NAME}; resuming them as this run "
                    "(their settings cannot be checked)",
                    stacklevel=3,
                )
            shards.atomic_write_bytes(run_file, json.dumps(fingerprint, indent=2).encode())
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices("claim_workdir")


def best_validation(workdir: str | os.PathLike) -> dict[str, float]:
    """The lowest-validation-loss row of workdir/metrics.jsonl ({} before the first evaluation)."""
    path = paths.of(workdir) / "metrics.jsonl"
    rows = (
        [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
    )
    rows = [r for r in rows if "val_loss" in r]
    if not rows:
        return {}
    best = min(rows, key=lambda r: r["val_loss"])
    return {"step": best["step"], **{k: v for k, v in best.items() if k.startswith("val_")}}


def _first_non_finite(losses: list[tuple[int, Array]]) -> None:
    if not losses:
        return
    values = np.asarray(jnp.stack([v for _, v in losses]))
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        step = losses[bad[0]][0]
        raise ValueError(
            f"training loss became {values[bad[0]]} at step {step}; stopped before saving it "
            "(lower the learning rate, use float32, or check the data)"
        )
    losses.clear()


def train_and_evaluate(
    model_config: iem.IEMConfig,
    cfg: TrainConfig,
    train_ds: shards.TokenDataset,
    val_ds: shards.TokenDataset,
    codebook: Any,
    workdir: str | os.PathLike,
    progress: Callable[[int, int, dict[str, float]], None] = lambda step, total, m: None,
    stop_after: int | None = None,
    fresh: bool = False,
    on_resume: Callable[[int], None] = lambda step: None,
) -> tuple[TrainState, dict[str, float]]:
    """Trains (resuming from workdir/checkpoints/latest if present); returns the final state and
    the best validation metrics of the whole run (a resumed or finished run included).

    A resumed run must be the same run: its fingerprint (`run_fingerprint`) is stored in
    workdir/run.json and checked, and a mismatch is a one-line error; `fresh` starts over. A
    non-finite loss stops the run with the step named, before that state is checkpointed.
    `stop_after` ends the run early at that step (for tests). A resume calls `on_resume(step)`;
    Ctrl-C or SIGTERM (a preempted VM) stops the run at the next step boundary, so within one
    training step plus that step's evaluation and checkpoint write, saves the state of the last
    finished step and raises `errors.Interrupted` naming it; a second signal stops at once.

    With several processes (jax.distributed) a SIGTERM to any of them stops all of them at one
    step (`sharding.preemption_agreed`): one past the furthest step any process had finished when
    the notice came; every process saves the state there (one checkpoint) and raises
    `errors.Interrupted`. The bound: one step past the furthest process once the notice has
    spread through jax.distributed's coordination service (well under a second; SIGTERM as step
    12 started stopped the tests' tiny CPU run at 16), then that step's evaluation and checkpoint
    write. Ctrl-C is not taken there (the process ends; `sharding` says what the others do)."""
    root = paths.of(workdir, "workdir")
    if not paths.is_remote(root):
        root.mkdir(parents=True, exist_ok=True)
    _check_data(model_config, codebook, train_ds, val_ds)
    _claim_workdir(root, run_fingerprint(model_config, cfg, train_ds, val_ds, codebook), fresh)
    pi, pc = jax.process_index(), jax.process_count()
    train_reader = shards.BatchReader(train_ds, cfg.batch_size, cfg.seed, True, pi, pc)
    val_batch = min(cfg.batch_size, (len(val_ds) // pc) * pc)
    val_reader = shards.BatchReader(val_ds, val_batch, 0, False, pi, pc)
    spe = train_reader.steps_per_epoch
    total = cfg.epochs * spe
    grid = train_ds.tokens[0].shape[1]
    trainer = Trainer(model_config, cfg, codebook, grid, spe)
    every = cfg.checkpoint_every or spe
    eval_every = cfg.eval_every or spe
    latest, best = _managers(root, every)

    if latest.latest_step() is not None:  # resume: restore into the state's shapes, no init
        restore = ocp.args.StandardRestore(trainer.abstract_state)
        state = latest.restore(latest.latest_step(), args=restore)
        on_resume(int(state.step))
    else:
        state = trainer.init_state()
    start = int(state.step)
    metrics = events.MetricsFile(root / "metrics.jsonl", start) if pi == 0 else None
    end = min(total, stop_after) if stop_after is not None else total
    current: dict[str, Any] = {"state": state, "losses": []}  # what Ctrl-C finds
    log = events.ScalarLog(root / events.FOLDER, start) if pi == 0 else None
    try:
        with errors.stop_requests(enabled=jax.process_count() == 1) as requested:
            state, best_metrics = _loop(
                trainer,
                current,
                train_reader,
                val_reader,
                latest,
                best,
                metrics,
                start,
                end,
                total,
                eval_every,
                progress,
                log,
                requested,
            )
            if (signal := requested()) is not None:  # arrived during the last step
                raise _Stopped(signal)
    except KeyboardInterrupt as e:
        step = _save_on_interrupt(latest, current["state"], current["losses"])
        best.wait_until_finished()
        why = "interrupted"
        if isinstance(e, _Stopped) and e.signal != "SIGINT":
            why = f"stopped by {e.signal}"
        raise errors.Interrupted(
            f"{why}; state saved at step {step}, rerun the same command to resume"
        ) from None
    finally:
        if log is not None:
            log.close()
        if metrics is not None:
            metrics.close()
    latest.wait_until_finished()
    best.wait_until_finished()
    if pi == 0:  # the whole run's best, also after a resume or on a finished run
        best_metrics = best_validation(workdir) or best_metrics
    return state, best_metrics


class _Stopped(KeyboardInterrupt):
    """A SIGINT or SIGTERM the loop took at a step boundary (`errors.stop_requests`)."""

    def __init__(self, signal: str):
        super().__init__(signal)
        self.signal = signal


def _save_on_interrupt(
    latest: ocp.CheckpointManager, state: TrainState, losses: list[tuple[int, Array]]
) -> int:
    """The step a resume will start from: the interrupted state's, saved now when its buffers are
    intact (Ctrl-C may land while a donated step runs), its losses finite, and this is a single
    process; otherwise the last checkpoint's."""
    try:
        _first_non_finite(losses)
        leaves = jax.tree_util.tree_leaves(state)
        step = int(state.step)
        saved = latest.latest_step() or 0
        if jax.process_count() == 1 and not any(x.is_deleted() for x in leaves) and step > saved:
            latest.save(step, args=ocp.args.StandardSave(state), force=True)
    except Exception:  # the checkpoint already on disk is still a valid place to resume
        pass
    try:
        latest.wait_until_finished()
    except Exception:  # a save the interrupt broke: the steps before it remain
        pass
    return latest.latest_step() or 0


def _loop(
    trainer: Trainer,
    current: dict[str, Any],
    train_reader: shards.BatchReader,
    val_reader: shards.BatchReader,
    latest: ocp.CheckpointManager,
    best: ocp.CheckpointManager,
    metrics: events.MetricsFile | None,
    start: int,
    end: int,
    total: int,
    eval_every: int,
    progress: Callable[[int, int, dict[str, float]], None],
    log: events.ScalarLog | None = None,
    requested: Callable[[], str | None] = lambda: None,
) -> tuple[TrainState, dict[str, float]]:
    """Steps start..end from current['state']: train, evaluate, checkpoint, log (metrics.jsonl,
    and TensorBoard events on process 0), keeping
    `current` up to date for an interrupt. A stop `requested` (a signal's name) raises
    `_Stopped` at the next step boundary, after the pending checkpoint writes finished; so does
    the step all processes agreed on after a SIGTERM (`sharding.preemption_agreed`), once its
    state is saved. Returns
    the state and the best validation metrics seen in this call."""
    cfg, state = trainer.cfg, current["state"]
    best_metrics: dict[str, float] = {}
    losses: list[tuple[int, Array]] = current["losses"]  # since the last finiteness check
    t0, seen = time.time(), 0
    for step in range(start, end):
        if (signal := requested()) is not None:
            latest.wait_until_finished()
            raise _Stopped(signal)
        toks, labels = sharding.global_batch(trainer.mesh, train_reader.batch(step))
        state, m = trainer.train_step(state, toks, labels)
        current["state"] = state
        losses.append((step + 1, m["loss"]))
        seen += cfg.batch_size
        done = step + 1
        stop = sharding.preemption_agreed(done)  # the step every process stops at on SIGTERM
        record: dict[str, float] = {}
        evaluate = done % eval_every == 0 or done == total
        if evaluate or stop or done == end or done % 10 == 0 or latest.should_save(done):
            _first_non_finite(losses)  # before anything of this state is saved or logged
        if evaluate:
            record = trainer.evaluate(state, val_reader)
            best.save(done, args=ocp.args.StandardSave(state), metrics=record)
            if not best_metrics or record["val_loss"] < best_metrics["val_loss"]:
                best_metrics = {"step": done, **record}
        saved = latest.save(done, args=ocp.args.StandardSave(state), force=done == end or stop)
        if record or done % 10 == 0 or done == end:
            m = {k: float(v) for k, v in m.items()}
            m["images_per_s"] = seen / (time.time() - t0)
            line = {"step": done, **m, **record}
            if metrics is not None:
                metrics.append(line)
            if log is not None:
                log.write(done, line)
            progress(done, total, line)
        if saved and metrics is not None:
            metrics.flush()  # a resume from this checkpoint finds every line up to it
        if stop and done < end:  # every process saved this step's state above (one checkpoint)
            latest.wait_until_finished()
            raise _Stopped("SIGTERM")
    return state, best_metrics


def restore_best(trainer: Trainer, workdir: str | os.PathLike) -> TrainState:
    """The lowest-validation-loss state saved under workdir/checkpoints/best."""
    _, best = _managers(paths.of(workdir), 1)
    step = best.best_step()
    if step is None:
        raise FileNotFoundError(
            f"no best checkpoint under {paths.of(workdir) / 'checkpoints/best'}"
        )
    return best.restore(step, args=ocp.args.StandardRestore(trainer.abstract_state))


def to_numpy_tree(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda x: np.asarray(jax.device_get(x)), tree)


def fit_iem(
    model_config: iem.IEMConfig,
    cfg: TrainConfig,
    train_ds: shards.TokenDataset,
    val_ds: shards.TokenDataset,
    codebook: Any,
    workdir: str | os.PathLike,
    progress: Callable[[int, int, dict[str, float]], None] = lambda step, total, m: None,
    fresh: bool = False,
    vqgan: str | None = None,
    on_resume: Callable[[int], None] = lambda step: None,
) -> tuple[Callable[[Array], Array], dict[str, float]]:
    """The IEM experiment: `train_and_evaluate` (resumable), then the best-validation state as
    `predict(E) -> logits` with its validation metrics. With `vqgan` (the name of the VQGAN the
    IEM reads), process 0 also writes WORKDIR/iem, the folder `read_iem_folder` and
    `--iem-checkpoint` take, with the training set's first n_classes class names."""
    _, best = train_and_evaluate(
        model_config,
        cfg,
        train_ds,
        val_ds,
        codebook,
        workdir,
        progress,
        fresh=fresh,
        on_resume=on_resume,
    )
    trainer = Trainer(model_config, cfg, codebook, train_ds.tokens[0].shape[1], 1)
    state = restore_best(trainer, workdir)
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    if vqgan is not None and jax.process_index() == 0:
        names = train_ds.class_names[: model_config.n_classes]
        folders.write_iem_folder(
            paths.of(workdir) / "iem", model_config, to_numpy_tree(variables), names, vqgan
        )
    return iem.predictor(model_config, variables), best
