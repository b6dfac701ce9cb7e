"""One training run: output directory, model, optimizer, fit, evaluation, files.

`train(config)` is what `aw-train` calls after parsing; see docs/training.md.
Errors about the settings are `UsageError`s naming the `RunConfig` field at fault
in single backticks (e.g. "`out` '/x' is not empty"); `aw-train` writes its option
name there.
"""

import contextlib
import dataclasses
import json
import os
import sys
import time

import numpy as np

from aw_keras.train.checkpoint import CheckpointManager
from aw_keras.train.checkpoint import atomic_write_json
from aw_keras.train.checkpoint import remove_stale_temporaries
from aw_keras.utils.keras_files import check_keras_archive
from aw_keras.utils.text import count_phrase

RUN_FILE = "run.json"
# Settings that define a run: resuming with any of them changed is refused.
IDENTITY = ("model", "model_kwargs", "dataset", "data_dir", "preset", "epochs", "batch_size",
            "seed", "train_examples", "val_examples", "learning_rate", "mixed_precision",
            "init_from", "detector", "detector_kwargs", "image_size")


class UsageError(ValueError):
    """Bad input the user can fix; the CLI prints it and exits with status 2."""


@dataclasses.dataclass
class RunConfig:
    model: str
    dataset: str = "fashion_mnist"
    out: str = "runs/run"
    epochs: int = None            # None: the preset's
    batch_size: int = 128
    data_dir: str = None
    preset: str = None            # None: "small" for <= 64 px images, else "imagenet"
    model_kwargs: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    learning_rate: float = None   # None: the preset's linear-scaling rule
    train_examples: int = None
    val_examples: int = None
    resume: bool = False
    mixed_precision: bool = False
    jit: bool = False
    strategy: str = None          # None | "mirrored" | "multiworker"
    checkpoint_steps: int = 1000
    keep_checkpoints: int = 3
    attention_images: int = 4
    verbose: int = None           # Keras fit verbosity; None: 1 on a terminal, else 2
    init_from: str = None         # "imagenet" or a .keras / .weights.h5 file: start from it
                                  # (aw_keras.applications.from_pretrained)
    detector: str = None          # detection only (an FPN backbone model): "retinanet"
    image_size: int = None        # detection only: square training/evaluation size
    detector_kwargs: dict = dataclasses.field(default_factory=dict)  # detection: RetinaNet(...)

    def identity(self):
        return {k: getattr(self, k) for k in IDENTITY}


def log(message):
    print(message, flush=True)


# ----------------------------------------------------------------- output dir


def _normalized(identity):
    return json.loads(json.dumps(identity))


def prepare_output_dir(config):
    """Checks ``config.out``; returns True when there is a run to resume.

    Refuses (UsageError, nothing touched) a non-empty directory that is not an
    aw-train run, a run with different settings, and an existing run without
    ``config.resume``.
    """
    out = config.out
    run_file = os.path.join(out, RUN_FILE)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"`out` {out!r} exists and is not a directory.")
    if os.path.isfile(run_file):
        try:
            with open(run_file) as f:
                previous = json.load(f)["identity"]
        except (OSError, ValueError, KeyError) as error:
            raise UsageError(f"{run_file} is unreadable ({error}); refusing to touch {out!r}. "
                             "Choose another `out`.") from error
        current = _normalized(config.identity())
        # a run written before a setting existed ran with that setting's default
        defaults = _normalized(RunConfig(model=config.model).identity())
        previous = {k: previous.get(k, defaults[k]) for k in current}
        changed = {k: (previous[k], current[k]) for k in current if previous[k] != current[k]}
        if changed:
            details = ", ".join(f"{k}: {a!r} there vs {b!r} now" for k, (a, b) in changed.items())
            raise UsageError(
                f"`out` {out!r} holds a different run ({details}). Nothing was overwritten; "
                "choose another `out`, or repeat the original settings with `resume=True`.")
        if not config.resume:
            raise UsageError(
                f"`out` {out!r} already holds this run. Pass `resume=True` to continue it "
                "(from its last checkpoint) or choose another `out`; nothing was overwritten.")
        return True
    if os.path.isdir(out) and os.listdir(out):
        raise UsageError(
            f"`out` {out!r} is not empty and holds no aw-train run ({RUN_FILE} missing); "
            "refusing to write into it. Choose a new or empty directory.")
    if config.resume:
        log(f"[aw-train] resume: no run in {out!r} yet, starting a new one.")
    return False


# --------------------------------------------------------------------- setup


def make_strategy(strategy):
    """The tf.distribute strategy named ``strategy``: None (the default strategy),
    "mirrored" or "multiworker"."""
    import tensorflow as tf

    if strategy is None:
        return tf.distribute.get_strategy()
    if strategy == "mirrored":
        replicas = os.environ.get("AW_TRAIN_CPU_REPLICAS")
        if replicas and not tf.config.list_physical_devices("GPU"):
            # CPU-only: split the CPU into logical devices to run (and test) the
            # multi-replica code path without GPUs.
            if not replicas.isdigit() or int(replicas) < 1:
                raise UsageError(f"AW_TRAIN_CPU_REPLICAS must be a positive integer, "
                                 f"got {replicas!r}.")
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * int(replicas))
            devices = [f"/cpu:{i}" for i in range(int(replicas))]
            return tf.distribute.MirroredStrategy(devices)
        return tf.distribute.MirroredStrategy()
    if strategy == "multiworker":
        if not os.environ.get("TF_CONFIG"):
            raise UsageError("`strategy` 'multiworker' needs the TF_CONFIG environment "
                             "variable (cluster and task); see docs/training.md.")
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise UsageError(f"`strategy` must be None, 'mirrored' or 'multiworker', got {strategy!r}.")


def set_mixed_precision_policy():
    """The global policy of ``--mixed-precision``: mixed_float16 when the
    backend sees a GPU, mixed_bfloat16 on CPU."""
    import keras

    from aw_keras.utils.keras_backend import gpu_available

    keras.mixed_precision.set_global_policy("mixed_float16" if gpu_available()
                                            else "mixed_bfloat16")


def jit_compile_setting(config):
    """``compile``'s ``jit_compile`` for ``config``: ``--jit`` is TensorFlow's XLA
    switch; JAX and PyTorch get Keras's own default ("auto": JAX compiles its
    steps, PyTorch runs eagerly)."""
    import keras

    return bool(config.jit) if keras.backend.backend() == "tensorflow" else "auto"


def worker_role(strategy):
    """(is_chief, task label) under multi-worker training."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not getattr(resolver, "task_type", None):
        return True, "chief"
    task_type, task_id = resolver.task_type, resolver.task_id
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0
                                     and "chief" not in resolver.cluster_spec().as_dict())
    return chief, f"{task_type}-{task_id}"


def build_model(config, source, preset):
    """The classifier of ``config``: it takes RAW images (float32 or uint8 pixel
    values 0..255, channels-last, `aw_keras.data.image_shape`) and normalises them
    itself (its first layer, `aw_keras.data.pipeline.preprocessing_layer`), so the
    saved model and its exports need no outside preprocessing.

    With ``init_from`` the registered model is converted from that source
    (`aw_keras.applications.from_pretrained`); a ``.keras`` source with its own
    normalisation layer keeps it (the converted model computes the source's
    function on raw images), one without it (written before models carried their
    normalisation) gets the normalisation the pipeline applied for it."""
    from aw_keras import applications
    from aw_keras.data import image_shape
    from aw_keras.data import pipeline

    kwargs = dict(config.model_kwargs)
    kwargs.setdefault("input_shape", image_shape(source, preset))
    kwargs.setdefault("classes", source.num_classes)
    preprocessing = None
    try:
        if config.init_from:
            init = config.init_from
            if str(init).endswith(".keras"):
                init, preprocessing = _init_source(init)
            # The same function as the trained source, new attention learned from here.
            model = applications.from_pretrained(init, config.model, **kwargs)
        else:
            model = applications.get_model(config.model, **kwargs)
    except (TypeError, ValueError) as error:
        if isinstance(error, UsageError):
            raise
        origin = f" from `init_from` {config.init_from!r}" if config.init_from else ""
        raise UsageError(
            f"Cannot build model {config.model!r}{origin} with {kwargs}: {error}") from error
    if preprocessing is None:
        preprocessing = pipeline.preprocessing_layer(source, preset)
    return float32_outputs(with_input_layer(model, preprocessing))


def _init_source(path):
    """(model, its input normalisation layer or None) of the ``.keras`` file
    ``path``; the model without that layer (it takes normalised images)."""
    import keras

    import aw_keras.layers  # noqa: F401 - registers the custom layers
    from aw_keras.data import pipeline

    if not os.path.isfile(path):
        raise UsageError(f"`init_from` file {path!r} does not exist.")
    try:
        check_keras_archive(path, "`init_from` file")
    except ValueError as error:
        raise UsageError(str(error)) from None
    try:
        model = keras.saving.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001 - Keras raises many types for a bad file
        raise UsageError(
            f"`init_from` {path!r} cannot be read as a .keras model ({type(error).__name__}: "
            f"{error}); is the file complete?") from error
    layer = next((layer for layer in model.layers
                  if layer.name == pipeline.PREPROCESSING_LAYER_NAME), None)
    if not isinstance(layer, keras.layers.Normalization):
        return model, None
    body = keras.Model(layer.output, model.output, name=model.name)
    return body, keras.layers.Normalization.from_config(layer.get_config())


def with_input_layer(model, layer):
    """A new functional model ``Input -> layer -> model``, flat: every layer of
    ``model`` is copied (same name and config) with its weights, so each layer of
    the result belongs to that graph alone (``layer.input`` / ``layer.output`` are
    the result's tensors); ``model`` is left as it is."""
    import keras

    inputs = keras.Input(model.input_shape[1:], name="image")
    applied = []

    def call(operation, *args, **kwargs):
        if args and args[0] is inputs:
            if not applied:
                applied.append(layer(inputs))
            args = (applied[0],) + args[1:]
        return operation(*args, **kwargs)

    result = keras.models.clone_model(model, input_tensors=inputs, call_function=call)
    result.set_weights(model.get_weights())
    return result


def float32_outputs(model):
    """Under a mixed policy, ends ``model`` with a float32 cast (Keras's advice for
    a numerically stable loss; the top-5 metric also needs float32 scores)."""
    import keras

    if model.output.dtype == "float32":
        return model
    outputs = keras.layers.Activation("linear", dtype="float32", name="predictions_float32")(
        model.output)
    return keras.Model(model.inputs, outputs, name=model.name)


def all_layers(layer, seen=None):
    """``layer`` and every layer reachable from it: ``layers`` of models and the
    sublayers held as attributes (e.g. AWConv2D's ``squeeze_bn``)."""
    import keras

    seen = set() if seen is None else seen
    if id(layer) in seen:
        return []
    seen.add(id(layer))
    found = [layer]
    children = list(getattr(layer, "layers", []) or [])
    for value in vars(layer).values():
        values = value if isinstance(value, (list, tuple)) else [value]
        children.extend(v for v in values if isinstance(v, keras.layers.Layer))
    for child in children:
        found.extend(all_layers(child, seen))
    return found


def set_bn_momentum(model, momentum):
    """Sets every BatchNormalization momentum; returns how many were set."""
    import keras

    count = 0
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
            count += 1
    return count


def make_optimizer(config, preset, steps, lr):
    import keras

    from aw_keras.optimizers import SGDL2

    total = steps * config.epochs
    if preset.schedule == "step":
        boundaries = [steps * e for e in range(preset.step_epochs, config.epochs, preset.step_epochs)]
        values = [lr * preset.step_factor ** i for i in range(len(boundaries) + 1)]
        schedule = (keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
                    if boundaries else lr)
    else:
        warmup = min(int(round(preset.warmup_epochs * steps)), total - 1)
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else lr, max(1, total - warmup),
            warmup_target=lr if warmup else None, warmup_steps=warmup)
    return SGDL2(schedule, momentum=preset.momentum, nesterov=preset.nesterov,
                 l2=preset.weight_decay)


def current_lr(optimizer):
    lr = optimizer.learning_rate
    return float(np.asarray(lr.numpy() if hasattr(lr, "numpy") else lr))


# ----------------------------------------------------------------- callback


def _keras_callback_base():
    import keras

    return keras.callbacks.Callback


class RunKeeper(_keras_callback_base()):
    """History, timing, best model and checkpoints (every N steps, every epoch)."""

    def __init__(self, config, manager, state, steps, is_chief, best_path,
                 best_metric="val_accuracy"):
        super().__init__()
        self.best_metric = best_metric  # the largest value of this log key is the best model
        self.config, self.manager, self.state = config, manager, state
        self.steps, self.is_chief, self.best_path = steps, is_chief, best_path
        self._epoch_start = None
        self._train_seconds = 0.0
        self._steps_this_epoch = 0

    def _global_step(self):
        return int(np.asarray(self.model.optimizer.iterations.numpy()))

    def save(self):
        if self.is_chief:
            self.manager.save(self.model, self.model.optimizer, self.state)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._steps_this_epoch = 0

    def on_train_batch_end(self, batch, logs=None):
        self._steps_this_epoch += 1
        self._train_seconds = time.perf_counter() - self._epoch_start
        every = self.config.checkpoint_steps
        step = self._global_step()
        if every and step % every == 0 and step % self.steps:
            self.state.update(global_step=step, step_in_epoch=step % self.steps)
            self.save()

    def on_epoch_end(self, epoch, logs=None):
        logs = {k: float(v) for k, v in (logs or {}).items()}
        entry = {"epoch": epoch + 1, "lr_end": current_lr_at(self.model.optimizer),
                 "train_seconds": round(self._train_seconds, 3),
                 "train_steps": self._steps_this_epoch,
                 "images_per_second": round(self._steps_this_epoch * self.config.batch_size
                                            / max(self._train_seconds, 1e-9), 2),
                 "first_epoch_of_process": not self.state.get("_seen_epoch_in_process", False),
                 **logs}
        self.state["_seen_epoch_in_process"] = True
        self.state["history"] = [h for h in self.state["history"] if h["epoch"] != epoch + 1]
        self.state["history"].append(entry)
        val = logs.get(self.best_metric)
        key = f"best_{self.best_metric}"
        improved = val is not None and (self.state.get(key) is None or val > self.state[key])
        if improved:
            self.state.update({key: val, "best_epoch": epoch + 1})
            if self.is_chief:
                save_model_atomically(self.model, self.best_path)
        self.state.update(epoch=epoch + 1, step_in_epoch=0, global_step=self._global_step())
        self.save()
        if self.is_chief:
            write_history(self.config.out, self.state["history"])


def current_lr_at(optimizer):
    try:
        return current_lr(optimizer)
    except Exception:  # noqa: BLE001 - schedules evaluate lazily on some versions
        return None


def save_model_atomically(model, path):
    """Writes ``model`` to the ``.keras`` file ``path`` (a temporary file, then a
    rename) without its optimizer and compile settings: Keras 3's ``.keras`` format
    ignores ``include_optimizer=False`` and would store every optimizer variable.
    The file loads as an uncompiled model, with no warning about optimizer
    variables; training state lives in the checkpoints."""
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}.{os.getpid()}.keras")
    with _without_training_state(model):
        model.save(tmp)
    os.replace(tmp, path)


@contextlib.contextmanager
def _without_training_state(model):
    """``model`` seen as uncompiled and without an optimizer while the block runs
    (restored after): what `keras.saving` then writes has neither."""
    optimizer = getattr(model, "optimizer", None)
    compiled = getattr(model, "compiled", False)
    if optimizer is None and not compiled:
        yield
        return
    model.optimizer = None
    model.compiled = False
    try:
        yield
    finally:
        model.optimizer = optimizer
        model.compiled = compiled


def write_history(out, history):
    clean = [{k: v for k, v in h.items() if not k.startswith("_")} for h in history]
    atomic_write_json(os.path.join(out, "history.json"), clean)


# ---------------------------------------------------------------------- train


def restore_state(config, model, optimizer, resuming, best_metric):
    """(checkpoint manager, run state): the newest intact checkpoint's state when
    resuming, else a fresh one whose best model is chosen by ``best_metric``."""
    manager = CheckpointManager(os.path.join(config.out, "checkpoints"),
                                keep=config.keep_checkpoints, log=log)
    state = manager.restore_latest(model, optimizer) if resuming else None
    if state is None:
        state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "history": [],
                 f"best_{best_metric}": None, "best_epoch": None}
    state.pop("_seen_epoch_in_process", None)
    return manager, state


def reports_top5(source):
    """Top-5 accuracy means something only with more than 5 classes."""
    return source.num_classes > 5


TEST_IS_VALIDATION_NOTE = (
    "the dataset has no test split: the test split IS the validation split, so "
    "best_top1_error is of the model chosen on these very images (optimistic)")


def data_record(source):
    """What run.json and metrics.json say about the data: the class names (line i =
    label i), the files left out as not images, whether test is validation."""
    record = {"class_names": source.label_names(),
              "test_is_validation": bool(source.test_is_validation)}
    if source.skipped_files:
        record["skipped_files"] = dict(source.skipped_files)
    return record


def _one_hot(num_classes):
    import tensorflow as tf

    def fn(images, labels):
        return images, tf.one_hot(labels, num_classes)

    return fn


def train(config):
    """Runs (or resumes) ``config``; returns the metrics dict."""
    import keras

    from aw_keras import data

    strategy = make_strategy(config.strategy)  # first: multi-worker needs it early
    is_chief, role = worker_role(strategy)
    source = data.get_source(config.dataset, config.data_dir)
    if config.preset is None:
        height = source.image_shape[0]
        config.preset = "small" if height is not None and height <= 64 else "imagenet"
    preset = data.get_preset(config.preset)
    if config.epochs is None:
        config.epochs = preset.epochs
    lr = config.learning_rate or preset.learning_rate(config.batch_size)
    resuming = prepare_output_dir(config) if is_chief else os.path.isdir(config.out)

    if config.mixed_precision:
        set_mixed_precision_policy()
    keras.utils.set_random_seed(config.seed)

    train_split = source.split("train").take(config.train_examples)
    steps = data.pipeline.steps_per_epoch(train_split.num_examples, config.batch_size)
    with strategy.scope():
        model = build_model(config, source, preset)
        if preset.bn_momentum is not None:
            set_bn_momentum(model, preset.bn_momentum)
        optimizer = make_optimizer(config, preset, steps, lr)
        model.compile(
            optimizer=optimizer,
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=preset.label_smoothing),
            metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")]
            + ([keras.metrics.TopKCategoricalAccuracy(k=5, name="top5")]
               if reports_top5(source) else []),
            jit_compile=jit_compile_setting(config),
        )
        optimizer.build(model.trainable_variables)

    # Everything above can fail on bad input; only now is the output directory written.
    out = config.out
    worker_dir = out if is_chief else os.path.join(out, "workers", role)
    os.makedirs(worker_dir, exist_ok=True)
    if is_chief:
        remove_stale_temporaries(out)
        if not resuming:
            atomic_write_json(os.path.join(out, RUN_FILE), {
                "identity": _normalized(config.identity()),
                "config": _normalized(dataclasses.asdict(config)),
                "preset": preset.to_dict(), "learning_rate": lr,
                "init_from_sha256": _file_sha256(config.init_from),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "backend": keras.backend.backend(),
                **data_record(source),
            })
        else:
            _add_missing_run_fields(os.path.join(out, RUN_FILE), data_record(source))

    manager, state = restore_state(config, model, optimizer, resuming, "val_accuracy")

    one_hot = _one_hot(source.num_classes)
    val_ds = data.eval_dataset(source, "validation", preset, config.batch_size,
                               config.val_examples).map(one_hot)
    keeper = RunKeeper(config, manager, state, steps, is_chief, os.path.join(out, "best.keras"))
    callbacks = [keeper]
    if is_chief:
        if tensorboard_available():
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(out, "tensorboard"),
                                                         profile_batch=0))
        else:
            log("[aw-train] TensorBoard logs skipped: the `tensorboard` package is not "
                "installed (pip install tensorboard).")
    verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
    if config.init_from and "init_eval" not in state and not (
            state["epoch"] or state["step_in_epoch"]):
        state["init_eval"] = initial_evaluation(config, model, source, preset, val_ds, one_hot)

    epoch, skip = state["epoch"], state["step_in_epoch"]
    log(f"[aw-train] {config.model} on {source.name} ({train_split.num_examples} train images, "
        f"{steps} steps/epoch of {config.batch_size}), preset {preset.name}, lr {lr:g}, "
        f"epochs {epoch}->{config.epochs}, {strategy.num_replicas_in_sync} replica(s), "
        f"params {model.count_params():,}")
    if source.skipped_files:
        names = list(source.skipped_files)
        log(f"[aw-train] left out {count_phrase(len(names), 'file')} that are not images: "
            + ", ".join(repr(n) for n in names[:5])
            + (f" and {len(names) - 5} more (all in {RUN_FILE})" if len(names) > 5 else ""))
    if source.test_is_validation:
        log(f"[aw-train] note: {TEST_IS_VALIDATION_NOTE}.")
    trained = False
    if config.strategy == "multiworker":
        # Keras 3's fit cannot run MultiWorkerMirroredStrategy (keras-team/keras#20585:
        # its symbolic build reduces the nested input batch and fails), so multi-worker
        # training runs this plain loop: strategy.run over the distributed dataset,
        # gradients all-reduced by the optimizer, the same callback.
        if epoch < config.epochs:
            multiworker_fit(model, strategy, source, preset, config, state, steps, val_ds,
                            keeper, one_hot)
            trained = True
        epoch = config.epochs
        skip = 0
    if skip and epoch < config.epochs:
        # Finish the interrupted epoch on exactly the batches it had left.
        ds, _ = data.train_dataset(source, preset, config.batch_size, config.seed, epoch,
                                   epoch + 1, skip_steps=skip,
                                   num_examples=config.train_examples)
        model.fit(ds.map(one_hot), initial_epoch=epoch, epochs=epoch + 1,
                  steps_per_epoch=steps - skip, validation_data=val_ds,
                  callbacks=callbacks, verbose=verbose, shuffle=False)
        epoch = state["epoch"]
        trained = True
    if epoch < config.epochs:
        ds, _ = data.train_dataset(source, preset, config.batch_size, config.seed, epoch,
                                   config.epochs, num_examples=config.train_examples)
        model.fit(ds.map(one_hot), initial_epoch=epoch, epochs=config.epochs,
                  steps_per_epoch=steps, validation_data=val_ds, callbacks=callbacks,
                  verbose=verbose, shuffle=False)
    elif resuming and not trained:
        log(f"[aw-train] {'the' if config.epochs == 1 else 'all'} "
            f"{count_phrase(config.epochs, 'epoch')} {'was' if config.epochs == 1 else 'were'} "
            "already done; evaluating.")

    metrics = finish(config, model, source, preset, state, is_chief, worker_dir, one_hot)
    return metrics


def _add_missing_run_fields(run_file, fields):
    """Adds to ``run_file`` (a run written by an earlier version) the ``fields`` it
    lacks; the settings it holds are never changed."""
    try:
        with open(run_file) as f:
            record = json.load(f)
    except (OSError, ValueError):
        return
    missing = {k: v for k, v in fields.items() if k not in record}
    if missing:
        atomic_write_json(run_file, {**record, **missing})


def _file_sha256(path):
    """SHA-256 of the ``init_from`` file (None for "imagenet" or no file)."""
    import hashlib

    if not path or not os.path.isfile(path):
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def initial_evaluation(config, model, source, preset, val_ds, one_hot):
    """Validation and test metrics of the converted ``init_from`` model before any
    training (its "epoch 0"; equal to the source's); kept in metrics.json."""
    from aw_keras import data

    test_ds = data.eval_dataset(source, "test", preset, config.batch_size).map(one_hot)
    if config.strategy == "multiworker":
        val, test = evaluate_local(model, val_ds), evaluate_local(model, test_ds)
    else:
        val = model.evaluate(val_ds, return_dict=True, verbose=0)
        test = model.evaluate(test_ds, return_dict=True, verbose=0)
    top5 = reports_top5(source)
    result = {"val_loss": float(val["loss"]), "val_accuracy": float(val["accuracy"]),
              "val_top5": float(val["top5"]) if top5 else None,
              "test_loss": float(test["loss"]),
              "top1_error": round(1.0 - float(test["accuracy"]), 6),
              "top5_error": round(1.0 - float(test["top5"]), 6) if top5 else None}
    log(f"[aw-train] init_from {config.init_from}: before training val_accuracy "
        f"{result['val_accuracy']:.4f}, test top-1 error {result['top1_error']:.4f}")
    return result


def tensorboard_available():
    import importlib.util

    return importlib.util.find_spec("tensorboard") is not None


def evaluate_local(model, dataset):
    """Loss, top-1 and top-5 accuracy of ``model`` on ``dataset`` without
    Model.evaluate (which multi-worker Keras 3 cannot run); same on every worker."""
    import keras

    loss_fn = keras.losses.CategoricalCrossentropy(reduction="sum")
    if keras.backend.backend() != "tensorflow":
        return _evaluate_numpy(model, dataset, loss_fn)
    import tensorflow as tf

    @tf.function
    def batch_stats(x, y):
        p = tf.cast(model(x, training=False), tf.float32)
        true = tf.argmax(y, axis=-1, output_type=tf.int32)
        top1 = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(p, -1, output_type=tf.int32), true),
                                     tf.float32))
        top5 = tf.reduce_sum(tf.cast(tf.math.in_top_k(true, p, min(5, p.shape[-1])), tf.float32))
        return loss_fn(y, p), top1, top5, tf.cast(tf.shape(x)[0], tf.float32)

    totals = np.zeros(4)
    for x, y in dataset:
        totals += np.array([float(v) for v in batch_stats(x, y)])
    n = max(totals[3], 1.0)
    return {"loss": totals[0] / n, "accuracy": totals[1] / n, "top5": totals[2] / n}


def _evaluate_numpy(model, dataset, loss_fn):
    """`evaluate_local` on a backend other than TensorFlow: each batch through
    ``predict_on_batch``, the counts in NumPy."""
    import keras

    totals = np.zeros(4)
    for x, y in dataset:
        y = np.asarray(y, np.float32)
        p = np.asarray(keras.ops.convert_to_numpy(model.predict_on_batch(np.asarray(x))),
                       np.float32)
        true = y.argmax(-1)
        top_k = np.argsort(-p, axis=-1)[:, :min(5, p.shape[-1])]
        totals += [float(keras.ops.convert_to_numpy(loss_fn(y, p))),
                   float((p.argmax(-1) == true).sum()),
                   float((top_k == true[:, None]).any(-1).sum()), len(x)]
    n = max(totals[3], 1.0)
    return {"loss": totals[0] / n, "accuracy": totals[1] / n, "top5": totals[2] / n}


def multiworker_fit(model, strategy, source, preset, config, state, steps, val_ds, keeper,
                    one_hot):
    import keras
    import tensorflow as tf

    from aw_keras import data

    loss_fn = keras.losses.CategoricalCrossentropy(
        label_smoothing=preset.label_smoothing, reduction="none")
    optimizer = model.optimizer

    @tf.function
    def train_step(iterator):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                p = model(x, training=True)
                per_example = loss_fn(y, tf.cast(p, tf.float32))
                loss = tf.nn.compute_average_loss(per_example,
                                                  global_batch_size=config.batch_size)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            correct = tf.reduce_sum(tf.cast(tf.equal(tf.argmax(p, -1), tf.argmax(y, -1)),
                                            tf.float32))
            return loss, correct / config.batch_size

        loss, accuracy = strategy.run(replica_step, args=next(iterator))
        return (strategy.reduce("SUM", loss, axis=None),
                strategy.reduce("SUM", accuracy, axis=None))

    moving = [v for v in model.non_trainable_variables if "float" in str(v.dtype)]

    @tf.function
    def mean_over_workers():
        def replica_fn():
            context = tf.distribute.get_replica_context()
            return context.all_reduce("MEAN", [tf.identity(v.value) for v in moving])

        return strategy.run(replica_fn)

    def sync_moving_statistics():
        # Each worker updates BN moving statistics on its own shard; average them so
        # every worker holds the same model (validation, checkpoints, final weights).
        if moving:
            values = mean_over_workers()
            for variable, value in zip(moving, values):
                variable.assign(strategy.experimental_local_results(value)[0])

    keeper.set_model(model)
    epoch, skip = state["epoch"], state["step_in_epoch"]
    ds, _ = data.train_dataset(source, preset, config.batch_size, config.seed, epoch,
                               config.epochs, skip_steps=skip, num_examples=config.train_examples)
    iterator = iter(strategy.experimental_distribute_dataset(ds.map(one_hot)))
    for current in range(epoch, config.epochs):
        keeper.on_epoch_begin(current)
        losses, accuracies = [], []
        for step in range(skip if current == epoch else 0, steps):
            loss, accuracy = train_step(iterator)
            losses.append(float(loss))
            accuracies.append(float(accuracy))
            keeper.on_train_batch_end(step)
        sync_moving_statistics()
        val = evaluate_local(model, val_ds)
        logs = {"loss": float(np.mean(losses)), "accuracy": float(np.mean(accuracies)),
                **{f"val_{k}": float(v) for k, v in val.items()}}
        log(f"Epoch {current + 1}/{config.epochs} - " + " - ".join(
            f"{k}: {v:.4f}" for k, v in logs.items()))
        keeper.on_epoch_end(current, logs)


def _train_images_per_second(history):
    steady = [h for h in history if not h.get("first_epoch_of_process")] or history
    seconds = sum(h["train_seconds"] for h in steady)
    images = sum(h["images_per_second"] * h["train_seconds"] for h in steady)
    return round(images / seconds, 2) if seconds else None


def _gflops(model):
    from aw_keras.utils import count_flops

    try:
        return round(float(count_flops(model)) / 1e9, 6)
    except Exception as error:  # noqa: BLE001 - report, never fail the run on it
        log(f"[aw-train] count_flops failed: {error}")
        return None


def _weights_digest(model, trainable_only=False):
    import hashlib

    digest = hashlib.sha256()
    for weight in (model.trainable_weights if trainable_only else model.weights):
        digest.update(np.ascontiguousarray(np.asarray(weight.numpy(), np.float32)).tobytes())
    return digest.hexdigest()


def finish(config, model, source, preset, state, is_chief, worker_dir, one_hot):
    from aw_keras import data

    test_ds = data.eval_dataset(source, "test", preset, config.batch_size).map(one_hot)
    top5 = reports_top5(source)
    start = time.perf_counter()
    if config.strategy == "multiworker":
        last = evaluate_local(model, test_ds)
    else:
        last = model.evaluate(test_ds, return_dict=True, verbose=0)
    eval_seconds = time.perf_counter() - start
    digest = _weights_digest(model)
    metrics = {
        "model": config.model, "dataset": source.name, "seed": config.seed,
        "epochs": state["epoch"], "params": int(model.count_params()),
        "gflops": _gflops(model),
        "test_examples": source.split("test").num_examples,
        "top1_error": round(1.0 - float(last["accuracy"]), 6),
        # top-5 only with more than 5 classes (else it is always 0)
        "top5_error": round(1.0 - float(last["top5"]), 6) if top5 else None,
        "test_loss": round(float(last["loss"]), 6),
        "train_images_per_second": _train_images_per_second(state["history"]),
        "eval_images_per_second": round(source.split("test").num_examples / eval_seconds, 2),
        "best_epoch": state.get("best_epoch"),
        "best_val_accuracy": state.get("best_val_accuracy"),
        "weights_sha256": digest,
        "trainable_weights_sha256": _weights_digest(model, trainable_only=True),
        "init_from": config.init_from,
        "init_eval": state.get("init_eval"),
        "note": "top1/top5 errors are of the last model on the test split; the best model "
                "is chosen on the validation split"
                + (f"; {TEST_IS_VALIDATION_NOTE}" if source.test_is_validation else ""),
        **data_record(source),
    }
    best_path = os.path.join(config.out, "best.keras")
    if is_chief:
        save_model_atomically(model, os.path.join(config.out, "last.keras"))
        if os.path.isfile(best_path):
            import keras

            best = keras.models.load_model(best_path, compile=False)
            result = evaluate_local(best, test_ds)
            metrics["best_top1_error"] = round(1.0 - float(result["accuracy"]), 6)
            metrics["best_top5_error"] = (round(1.0 - float(result["top5"]), 6) if top5
                                          else None)
        write_history(config.out, state["history"])
        atomic_write_json(os.path.join(config.out, "metrics.json"), metrics)
        try:
            from aw_keras.train import plots

            written = plots.write_all(config.out, state["history"], model, source, preset,
                                      config.attention_images)
            log("[aw-train] plots: " + ", ".join(written))
        except Exception as error:  # noqa: BLE001 - plots are a convenience
            log(f"[aw-train] could not write plots: {type(error).__name__}: {error}")
    else:
        atomic_write_json(os.path.join(worker_dir, "worker.json"),
                          {"weights_sha256": digest, "epochs": state["epoch"],
                           "trainable_weights_sha256": _weights_digest(model, True)})
    top5_text = f", top-5 error {metrics['top5_error']:.4f}" if top5 else ""
    test_text = (" (test = validation split: no test split of its own, best model chosen "
                 "on it)" if source.test_is_validation else "")
    log(f"[aw-train] test{test_text} top-1 error {metrics['top1_error']:.4f}{top5_text}, "
        f"train {metrics['train_images_per_second']} images/s")
    return metrics
