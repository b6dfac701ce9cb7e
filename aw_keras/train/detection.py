"""One detection training run: an FPN backbone in a detector, COCO-format data, COCO mAP.

`train_detector(config)` is what ``aw-train`` calls when the model is an FPN
backbone (``aw_keras.applications.list_models(task="detection_backbone")``)::

    aw-train aw_resnet_small_fpn --detector retinanet --dataset fashion_detection \\
        --image-size 128 --epochs 12 --batch-size 8 --out runs/det_aw

``--detector faster_rcnn`` trains `aw_keras.detection.FasterRCNN` instead: the
backbone is built with ``levels="two_stage"`` (P2..P6; ``levels="retinanet"`` in
``--model-kwargs`` is a usage error) and everything else is the same. Its defaults
are torchvision's; small images want the small settings (docs/faster_rcnn.md)::

    aw-train aw_resnet_small_fpn --detector faster_rcnn --image-size 64 --out runs/frcnn \\
        --detector-kwargs '{"anchor_size": 4, "rpn_pre_nms_top_k_train": 200,
        "rpn_post_nms_top_k_train": 100, "rpn_pre_nms_top_k_test": 100,
        "rpn_post_nms_top_k_test": 50, "roi_samples_per_image": 64}'

Datasets: ``coco:DIR`` (the COCO 2017 layout, `aw_keras.data.load_coco`) or
``fashion_detection`` (the offline synthetic set, generated once and cached).
The run directory holds what a classification run holds (``run.json``,
checkpoints, ``history.json``, ``metrics.json`` with ``map``/``map50``/``map75``
and the size breakdown, ``best.keras`` by validation mAP, ``last.keras``,
TensorBoard logs) and the plots of `aw_keras.train.detection_plots`. ``run.json``
and ``metrics.json`` list ``class_names`` (the name of label 0, 1, ...). Resuming
(``resume=True``) continues from the last finished epoch. The saved detectors take
raw RGB images, float32 0-255, at ``image_size``: the backbone normalises them.
A training split without a usable image or box is a `UsageError` with its skip
counts, before anything is written; ``config`` itself is not modified.

``init_from`` (``--init-from PATH|imagenet``) starts the backbone from a trained
model with `aw_keras.applications.from_pretrained`: a plain FPN backbone or a
detector on one (``.keras``; the backbone's pyramid is reproduced, new attention
starts as identity), a classification ResNet or ``imagenet`` (the body is
transplanted, the FPN starts fresh). The detector's heads are always new. It is
part of the run's identity; ``run.json`` records the file's SHA-256::

    aw-train aw_resnet_small_fpn --init-from runs/det_plain/last.keras --out runs/det_aw_ft

``mixed_precision`` (``--mixed-precision``) and ``strategy="mirrored"``
(``--strategy mirrored``) work as for classification (`aw_keras.train.run.train`):
the policy is ``mixed_float16`` when a GPU is visible, else ``mixed_bfloat16``, set
before the detector is built; the detector, its optimizer and ``compile`` are
created inside ``strategy.scope()``, ``batch_size`` is the global batch (split
between the replicas) and validation predicts each batch once, split between the
replicas. ``AW_TRAIN_CPU_REPLICAS=2`` splits a CPU into two logical devices to run
the two-replica path without GPUs. The saved ``.keras`` files keep the policy they
were trained with. ``strategy="multiworker"`` is refused (aw-train's multi-worker
path is a custom classification loop; use ``mirrored``), and so is ``preset``
(presets are classification recipes). Checked on CPU only (bfloat16, two CPU
replicas; tests/train/test_detection_strategy_precision.py).
"""

import dataclasses
import os
import sys
import time

from aw_keras.train import run as classification
from aw_keras.train.checkpoint import atomic_write_json
from aw_keras.train.checkpoint import remove_stale_temporaries
from aw_keras.train.run import UsageError
from aw_keras.train.run import log

DETECTORS = ("retinanet", "faster_rcnn")
# the FPN levels each detector needs (the backbone's ``levels`` argument)
DETECTOR_LEVELS = {"retinanet": "retinanet", "faster_rcnn": "two_stage"}
DEFAULT_DATASET = "fashion_detection"
DEFAULT_EPOCHS = 12
DEFAULT_LEARNING_RATE = 1e-3  # AdamW, cosine decay with a linear warmup
WARMUP_FRACTION = 0.05
# BatchNorm momentum of the detector: Keras's 0.99 leaves the moving statistics far
# behind the batch statistics for hundreds of steps, and the model that evaluates
# (inference mode) is then not the one that trains (docs/detection.md).
BN_MOMENTUM = 0.9


def _detection_source(config):
    """(train CocoSplit, validation CocoSplit, dataset name) of ``config.dataset``."""
    from aw_keras import data

    spec = config.dataset
    if spec == DEFAULT_DATASET:
        directory = data.fashion_detection_dir(fashion_mnist_dir=config.data_dir)
        name = DEFAULT_DATASET
    elif spec.lower().startswith("coco:"):
        directory = spec[len("coco:"):]
        name = spec
    else:
        raise UsageError(f"`dataset` {spec!r} is not a detection dataset: use 'coco:DIR' (the "
                         f"COCO layout) or '{DEFAULT_DATASET}' (offline).")
    try:
        train_name, val_name = data.find_coco_splits(directory)
        train_split = data.load_coco(directory, train_name)
        val_split = data.load_coco(directory, val_name)
    except data.DataError as error:
        # the reader names its Python argument `directory`; the user gave `dataset`
        message = str(error).replace("`directory` ", "the directory ")
        raise data.DataError(f"`dataset` {spec!r}: {message}") from error
    for split in (train_split, val_split):
        log(f"[aw-train] {split.report()}")
    if train_split.category_ids != val_split.category_ids:
        raise UsageError(f"`dataset` {spec!r}: the train and validation splits have different "
                         f"categories ({train_split.category_ids} vs {val_split.category_ids}).")
    if not train_split.images:
        raise UsageError(f"`dataset` {spec!r} has no usable training image: "
                         f"{train_split.report()}")
    if not train_split.num_boxes:
        raise UsageError(f"`dataset` {spec!r} has no usable training box (a detector "
                         f"cannot learn from negatives only): {train_split.report()} "
                         "See the skip reasons in docs/detection.md#checks.")
    return train_split, val_split, name


def build_detector(config, num_classes):
    """The detector of ``config`` on its FPN backbone (fixed square image size)."""
    from aw_keras import applications
    from aw_keras.detection import RetinaNet

    size = config.image_size
    kwargs = dict(config.model_kwargs)
    kwargs.setdefault("input_shape", (size, size, 3))
    detector = config.detector or "retinanet"
    if detector == "faster_rcnn":
        # P2..P6 unless the user's backbone arguments say otherwise
        levels = kwargs.setdefault("levels", DETECTOR_LEVELS[detector])
        if levels != DETECTOR_LEVELS[detector]:
            raise UsageError(
                f"`detector` 'faster_rcnn' needs an FPN backbone with levels='two_stage' (P2..P6); "
                f"`model_kwargs` (--model-kwargs) give levels={levels!r} for {config.model!r}. "
                "Drop `levels` from --model-kwargs or use --detector retinanet.")
    try:
        if config.init_from:
            # The trained source's function (pyramid, or body for a classifier source).
            backbone = applications.from_pretrained(config.init_from, config.model, **kwargs)
        else:
            backbone = applications.get_model(config.model, **kwargs)
    except (TypeError, ValueError) as error:
        origin = f" from `init_from` {config.init_from!r}" if config.init_from else ""
        raise UsageError(f"Cannot build the backbone {config.model!r}{origin} with "
                         f"`model_kwargs` {config.model_kwargs} at `image_size` {size}: "
                         f"{error}") from error
    try:
        if detector == "faster_rcnn":
            from aw_keras.detection.faster_rcnn import FasterRCNN

            return FasterRCNN(backbone, num_classes=num_classes, **config.detector_kwargs)
        return RetinaNet(backbone, num_classes=num_classes, **config.detector_kwargs)
    except (TypeError, ValueError) as error:
        raise UsageError(f"Cannot build detector {detector!r} on {config.model!r} with "
                         f"`detector_kwargs` {config.detector_kwargs}: {error}") from error


def make_optimizer(config, steps_per_epoch):
    import keras

    total = max(1, steps_per_epoch * config.epochs)
    warmup = max(1, int(WARMUP_FRACTION * total))
    lr = config.learning_rate or DEFAULT_LEARNING_RATE
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0, decay_steps=max(1, total - warmup), warmup_target=lr, warmup_steps=warmup)
    return keras.optimizers.AdamW(schedule, weight_decay=1e-4, global_clipnorm=10.0)


def _metrics_callback_base():
    import keras

    return keras.callbacks.Callback


class CocoMapCallback(_metrics_callback_base()):
    """Adds the validation COCO mAP (``val_map``, ``val_map50``, ``val_map75``) to
    each epoch's logs, before the `RunKeeper` reads them."""

    def __init__(self, dataset, split):
        super().__init__()
        self.dataset, self.split = dataset, split
        self.last = None  # (epoch, full metrics, seconds) of the latest evaluation

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        start = time.perf_counter()
        result = evaluate_map(self.model, self.dataset, self.split)
        self.last = (epoch + 1, result, time.perf_counter() - start)
        logs.update({f"val_{k}": v for k, v in result.items() if k in ("map", "map50", "map75")})
        log(f"[aw-train] epoch {epoch + 1}: validation mAP {result['map']:.4f}, "
            f"mAP@0.5 {result['map50']:.4f}")


def _progbar_base():
    import keras

    return keras.callbacks.ProgbarLogger


class EpochProgress(_progbar_base()):
    """Keras's progress display for a run trained with one ``fit`` per epoch: it
    shows ``Epoch k/N`` of the whole run (N = ``epochs``), not of the one-epoch
    ``fit`` (``Epoch 2/2``, ``Epoch 3/3``, ...). Pass it in ``fit``'s callbacks."""

    def __init__(self, epochs):
        super().__init__()
        self.total_epochs = epochs

    def set_params(self, params):
        super().set_params(params)
        self.epochs = self.total_epochs


def evaluate_map(model, dataset, split):
    """COCO metrics of ``model`` on ``dataset`` (batches with metadata) of ``split``."""
    from aw_keras.detection import CocoEvaluator

    evaluator = CocoEvaluator(split.ground_truth(), category_id_of=split.category_id_of)
    # tf.distribute replicas on TensorFlow; one on the other backends
    strategy = getattr(model, "distribute_strategy", None)
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    for images, _, metadata in dataset:
        if replicas > 1:
            # predict_on_batch runs the whole batch on every replica and concatenates
            # the copies; predict splits the batch between the replicas
            predictions = model.predict(images, batch_size=int(images.shape[0]), verbose=0)
        else:
            predictions = model.predict_on_batch(images)
        evaluator.update(predictions, metadata["image_id"].numpy(), metadata["scale"].numpy())
    return {k: float(v) for k, v in evaluator.result().items()}


def train_detector(config):
    """Runs (or resumes) a detection ``config``; returns the metrics dict."""
    import keras

    from aw_keras import data

    if config.detector not in DETECTORS:
        raise UsageError(f"`detector` must be one of {DETECTORS}, got {config.detector!r}.")
    if config.preset:  # presets are classification recipes (optimizer, schedule, augmentation)
        raise UsageError("`preset` is not supported for detection runs yet.")
    if config.strategy == "multiworker":
        raise UsageError(
            "`strategy` 'multiworker' is not supported for detection runs: aw-train's "
            "multi-worker path is a custom classification training loop (Keras 3's fit cannot "
            "run MultiWorkerMirroredStrategy). Use `strategy` 'mirrored' for several GPUs on "
            "one machine.")
    strategy = classification.make_strategy(config.strategy)  # first: it may split the CPU
    # the defaults go into a copy: the caller's config is not modified
    config = dataclasses.replace(
        config, epochs=DEFAULT_EPOCHS if config.epochs is None else config.epochs,
        image_size=128 if config.image_size is None else config.image_size)
    train_split, val_split, dataset_name = _detection_source(config)
    resuming = classification.prepare_output_dir(config)
    if config.mixed_precision:
        classification.set_mixed_precision_policy()
    keras.utils.set_random_seed(config.seed)
    steps = len(train_split.images) // config.batch_size
    if steps < 1:
        raise UsageError(f"`batch_size` {config.batch_size} is larger than the "
                         f"{len(train_split.images)} training images.")
    if config.train_examples:
        steps = min(steps, max(1, config.train_examples // config.batch_size))
    with strategy.scope():
        model = build_detector(config, train_split.num_classes)
        classification.set_bn_momentum(model, BN_MOMENTUM)
        optimizer = make_optimizer(config, steps)
        model.compile(optimizer=optimizer, jit_compile=classification.jit_compile_setting(config))
        optimizer.build(model.trainable_variables)

    out = config.out
    os.makedirs(out, exist_ok=True)
    remove_stale_temporaries(out)
    if not resuming:
        atomic_write_json(os.path.join(out, classification.RUN_FILE), {
            "identity": classification._normalized(config.identity()),
            "config": classification._normalized(dataclasses.asdict(config)),
            "learning_rate": config.learning_rate or DEFAULT_LEARNING_RATE,
            "data": {"train": train_split.report(), "validation": val_split.report()},
            "class_names": list(train_split.class_names),  # line i: the name of label i
            "backend": keras.backend.backend(),
            "init_from_sha256": classification._file_sha256(config.init_from),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        })
    manager, state = classification.restore_state(config, model, optimizer, resuming, "val_map")

    size, batch = config.image_size, config.batch_size
    val_examples = config.val_examples
    val_meta = data.detection_dataset(val_split, size, batch, with_metadata=True)
    if val_examples:
        val_meta = val_meta.take(max(1, -(-val_examples // batch)))
    val_ds = val_meta.map(lambda images, targets, _: (images, targets))
    keeper = classification.RunKeeper(config, manager, state, steps, True,
                                      os.path.join(out, "best.keras"), best_metric="val_map")
    evaluation = CocoMapCallback(val_meta, val_split)
    callbacks = [evaluation, keeper]
    if classification.tensorboard_available():
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(out, "tensorboard"),
                                                     profile_batch=0))
    verbose = config.verbose if config.verbose is not None else (1 if sys.stdout.isatty() else 2)
    callbacks.append(EpochProgress(config.epochs))  # last: it prints the epoch's final logs
    if config.init_from:
        log(f"[aw-train] backbone {config.model} initialised from {config.init_from}")
    log(f"[aw-train] {config.detector} on {config.model} ({model.count_params():,} params), "
        f"{dataset_name}: {len(train_split.images)} train / {len(val_split.images)} validation "
        f"images at {size}x{size}, {steps} steps/epoch of {batch}, epochs "
        f"{state['epoch']}->{config.epochs}, {strategy.num_replicas_in_sync} replica(s), "
        f"policy {keras.mixed_precision.global_policy().name}")
    first_epoch = state["epoch"]  # the callbacks advance state["epoch"] while training
    for epoch in range(first_epoch, config.epochs):
        # one dataset per epoch, shuffled by (seed, epoch): a resumed run sees the same order
        train_ds = data.detection_dataset(train_split, size, batch, training=True,
                                          seed=config.seed * 1000 + epoch)
        model.fit(train_ds, initial_epoch=epoch, epochs=epoch + 1, steps_per_epoch=steps,
                  validation_data=val_ds, callbacks=callbacks, verbose=verbose,
                  shuffle=False)  # the dataset shuffles by (seed, epoch) itself
    if resuming and first_epoch >= config.epochs:
        log(f"[aw-train] {'the 1 epoch was' if config.epochs == 1 else f'all {config.epochs} epochs were'} "
            "already done; evaluating.")
    return finish(config, model, state, val_meta, val_split, dataset_name, evaluation.last)


def finish(config, model, state, val_meta, val_split, dataset_name, last_evaluation=None):
    """Writes metrics.json, last.keras, history and plots. ``last_evaluation``:
    the callback's (epoch, metrics, seconds), reused when it is of the final model."""
    if last_evaluation is not None and last_evaluation[0] == state["epoch"]:
        _, result, seconds = last_evaluation
    else:  # a resumed run with nothing left to train
        start = time.perf_counter()
        result = evaluate_map(model, val_meta, val_split)
        seconds = time.perf_counter() - start
    evaluated = min(len(val_split.images), config.val_examples or len(val_split.images))
    metrics = {
        "model": config.model, "detector": config.detector, "dataset": dataset_name,
        "seed": config.seed, "epochs": state["epoch"], "image_size": config.image_size,
        "class_names": list(val_split.class_names),
        "params": int(model.count_params()),
        "backbone_params": int(model.backbone.count_params()),
        "gflops_backbone": classification._gflops(model.backbone),
        **{k: (None if v != v else round(v, 6)) for k, v in result.items()},
        "validation_images": evaluated,
        "train_images_per_second": classification._train_images_per_second(state["history"]),
        "eval_images_per_second": round(evaluated / seconds, 2),
        "best_epoch": state.get("best_epoch"),
        "best_val_map": state.get("best_val_map"),
        "weights_sha256": classification._weights_digest(model),
        "init_from": config.init_from,
        "note": "COCO metrics of the last model on the validation split (pycocotools); null: "
                "no ground truth of that size",
    }
    classification.save_model_atomically(model, os.path.join(config.out, "last.keras"))
    classification.write_history(config.out, state["history"])
    atomic_write_json(os.path.join(config.out, "metrics.json"), metrics)
    try:
        from aw_keras.train import detection_plots

        written = detection_plots.write_all(config.out, state["history"], model, val_meta,
                                            val_split, config.attention_images)
        log("[aw-train] plots: " + ", ".join(written))
    except Exception as error:  # noqa: BLE001 - plots are a convenience
        log(f"[aw-train] could not write plots: {type(error).__name__}: {error}")
    log(f"[aw-train] validation mAP {metrics['map']:.4f}, mAP@0.5 {metrics['map50']:.4f}, "
        f"mAP@0.75 {metrics['map75']:.4f}, train {metrics['train_images_per_second']} images/s")
    return metrics
