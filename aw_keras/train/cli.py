"""``aw-train``: train a registered model on a dataset, with resumable checkpoints.

Example:

    aw-train aw_resnet_cifar --dataset fashion_mnist --epochs 3 --batch-size 128 \\
        --out runs/aw_seed0 --seed 0
    # killed? run the same command with --resume
    aw-train aw_resnet_cifar --init-from runs/plain/last.keras --epochs 2 --out runs/aw_ft
    # detection: an FPN backbone name means detection (docs/detection.md)
    aw-train aw_resnet_small_fpn --detector retinanet --dataset fashion_detection \\
        --image-size 128 --epochs 12 --batch-size 8 --out runs/det_aw
    # two-stage: FPN Faster R-CNN on P2..P6 (docs/faster_rcnn.md)
    aw-train aw_resnet_small_fpn --detector faster_rcnn --image-size 128 --out runs/frcnn_aw \\
        --detector-kwargs '{"anchor_size": 4, "roi_samples_per_image": 128}'

Exit status: 0 done, 2 bad input (nothing written or overwritten), 1 failure.
"""

import argparse
import json
import os
import re
import sys

from aw_keras.utils import keras_backend
from aw_keras.utils import tf_quiet

# --batch-size defaults: detection images are larger (128-512 px) and each holds
# several boxes, so a detector's default batch is much smaller.
CLASSIFICATION_BATCH_SIZE = 128
DETECTION_BATCH_SIZE = 8


def _int_at_least(minimum, flag):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{flag} must be an integer >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{flag} must be an integer >= {minimum}, got {value}")
        return value

    return parse


def _positive_float(flag):
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag} must be a positive number, got {text!r}") from None
        if not value > 0 or value == float("inf"):
            raise argparse.ArgumentTypeError(f"{flag} must be a positive number, got {text!r}")
        return value

    return parse


def _json_object(flag, example):
    def parse(text):
        try:
            value = json.loads(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(
                f"{flag} must be a JSON object such as '{example}', got {text!r} ({error})") \
                from None
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"{flag} must be a JSON object such as "
                                             f"'{example}', got {text!r}")
        return value

    return parse


BACKENDS = ("tensorflow", "jax", "torch")
# detectors built on TensorFlow ops (the others run on every Keras backend)
TENSORFLOW_ONLY_DETECTORS = ("faster_rcnn",)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="aw-train",
        description="Train a registered aw_keras model (see aw_keras.applications.list_models()) "
                    "with checkpoints, TensorBoard logs, metrics and plots.",
        epilog="Datasets: fashion_mnist (offline default), folder:PATH, tfds:NAME. "
               "Multi-GPU: --strategy mirrored. Cluster: --strategy multiworker with TF_CONFIG "
               "(docs/training.md). TensorFlow's start-up log lines are hidden; "
               "AW_KERAS_TF_LOGS=1 shows them.")
    add = parser.add_argument
    add("model", help="registered model name, e.g. resnet_cifar, aw_resnet_cifar, aw_resnet50")
    add("--dataset", default=None,
        help="classification: fashion_mnist (default, offline), folder:PATH or tfds:NAME; "
             "detection: fashion_detection (default, offline) or coco:DIR")
    add("--data-dir", default=None, help="tfds data_dir, or the Fashion-MNIST directory")
    add("--out", required=True, help="output directory (new/empty, or this run's with --resume)")
    add("--epochs", type=_int_at_least(1, "--epochs"), default=None,
        help="epochs (default: the preset's)")
    add("--batch-size", type=_int_at_least(1, "--batch-size"), default=None,
        help=f"global batch size (default {CLASSIFICATION_BATCH_SIZE} for classification, "
             f"{DETECTION_BATCH_SIZE} for detection)")
    add("--preset", choices=("small", "small_noflip", "imagenet"), default=None,
        help="training recipe (default: small for images <= 64 px, else imagenet)")
    add("--learning-rate", type=_positive_float("--learning-rate"), default=None,
        help="peak learning rate (default: the preset's, scaled linearly with the batch size)")
    add("--seed", type=_int_at_least(0, "--seed"), default=0)
    add("--train-examples", type=_int_at_least(1, "--train-examples"), default=None,
        help="use only the first N training images")
    add("--val-examples", type=_int_at_least(1, "--val-examples"), default=None,
        help="validate on only the first N validation images")
    add("--model-kwargs", type=_json_object("--model-kwargs", '{"width": 8}'), default={},
        help="JSON object of extra builder arguments, e.g. '{\"blocks\": [1, 1, 1]}'")
    add("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    add("--init-from", default=None, metavar="PATH|imagenet",
        help="fine-tune: start MODEL from a trained plain model (.keras or .weights.h5 file) "
             "or from the keras.applications ImageNet weights ('imagenet': downloaded into "
             "the Keras cache once if missing; with other than 1000 classes the ImageNet body "
             "and a fresh classifier), converted so it computes the same function "
             "(docs/pretrained.md)")
    add("--mixed-precision", action="store_true",
        help="mixed_float16 on GPU, mixed_bfloat16 on CPU")
    add("--backend", choices=BACKENDS, default=None,
        help="Keras backend (default: KERAS_BACKEND, else tensorflow); jax and torch train "
             "classifiers and RetinaNet, without --strategy (docs/backends.md)")
    add("--jit", action="store_true", help="compile train/eval steps with XLA (TensorFlow)")
    add("--strategy", choices=("mirrored", "multiworker"), default=None,
        help="tf.distribute strategy (multiworker reads TF_CONFIG)")
    add("--checkpoint-steps", type=_int_at_least(0, "--checkpoint-steps"), default=1000,
        help="also checkpoint every N optimizer steps (0: only at epoch ends; default 1000)")
    add("--keep-checkpoints", type=_int_at_least(1, "--keep-checkpoints"), default=3)
    add("--attention-images", type=_int_at_least(0, "--attention-images"), default=4,
        help="validation images in the attention-map plot (0: none)")
    add("--detector", choices=("retinanet", "faster_rcnn"), default=None,
        help="detection: the detector on the FPN backbone MODEL (default retinanet). "
             "faster_rcnn (FPN Faster R-CNN, docs/faster_rcnn.md) builds the backbone with "
             "levels='two_stage' (P2..P6); its defaults are torchvision's (anchors 32-512 px, "
             "2000/1000 proposals, 512 RoIs, FC-1024): for small images (64-128 px) pass e.g. "
             "--detector-kwargs '{\"anchor_size\": 4, \"rpn_pre_nms_top_k_train\": 200, "
             "\"rpn_post_nms_top_k_train\": 100, \"rpn_pre_nms_top_k_test\": 100, "
             "\"rpn_post_nms_top_k_test\": 50, \"roi_samples_per_image\": 64, "
             "\"representation_size\": 128}'")
    add("--detector-kwargs",
        type=_json_object("--detector-kwargs", '{"pre_logits_num_conv_layers": 2}'), default={},
        help="detection: JSON object of extra detector arguments, e.g. "
             "'{\"pre_logits_num_conv_layers\": 2}' (lighter RetinaNet heads) or the "
             "faster_rcnn small-image settings above")
    add("--image-size", type=_int_at_least(32, "--image-size"), default=None,
        help="detection: square training/evaluation image size (default 128)")
    add("--verbose", type=int, choices=(0, 1, 2), default=None,
        help="Keras progress: 1 bar, 2 one line per epoch (default: 1 on a terminal)")
    return parser


def check_early(args):
    """Checks of the arguments parsed by `build_parser` that train nothing, so bad
    input fails before any file is written; raises UsageError."""
    from aw_keras.train.run import UsageError

    init_from = args.init_from
    if init_from is not None and init_from != "imagenet":
        if not init_from.endswith((".keras", ".h5")):
            raise UsageError(f"--init-from must be 'imagenet' or a .keras / .weights.h5 file, "
                             f"got {init_from!r}.")
        if not os.path.isfile(init_from):
            raise UsageError(f"--init-from file {init_from!r} does not exist.")
    from aw_keras import applications

    if not applications.is_model(args.model.lower()):
        # get_model_builder raises the message with close matches.
        try:
            applications.get_model_builder(args.model)
        except ValueError as error:
            raise UsageError(str(error)) from None
    detection = applications.model_task(args.model.lower()) == "detection_backbone"
    if detection:
        args.detector = args.detector or "retinanet"
        import keras

        if args.detector in TENSORFLOW_ONLY_DETECTORS and keras.backend.backend() != "tensorflow":
            raise UsageError(detector_backend_message(args.detector, keras.backend.backend()))
        levels = (args.model_kwargs or {}).get("levels", "two_stage")
        if args.detector == "faster_rcnn" and levels != "two_stage":
            raise UsageError(f"--detector faster_rcnn needs the FPN levels P2..P6 "
                             f"(levels='two_stage'); --model-kwargs give levels={levels!r} "
                             f"(P3..P7 is for --detector retinanet).")
        if args.dataset is None:
            args.dataset = "fashion_detection"
        if not (args.dataset == "fashion_detection" or args.dataset.lower().startswith("coco:")):
            raise UsageError(f"--dataset {args.dataset!r} is not a detection dataset; "
                             f"{args.model} is an FPN backbone: use coco:DIR or fashion_detection.")
        if args.dataset.lower().startswith("coco:") and not os.path.isdir(args.dataset[5:]):
            raise UsageError(f"--dataset {args.dataset!r}: directory {args.dataset[5:]!r} does "
                             "not exist.")
    else:
        for flag, value in (("--detector", args.detector), ("--image-size", args.image_size),
                            ("--detector-kwargs", args.detector_kwargs or None)):
            if value is not None:
                raise UsageError(f"{flag} applies to detection (an FPN backbone model such as "
                                 f"aw_resnet50_fpn); {args.model} is a classifier.")
        if args.dataset is None:
            args.dataset = "fashion_mnist"
    if args.batch_size is None:
        args.batch_size = DETECTION_BATCH_SIZE if detection else CLASSIFICATION_BATCH_SIZE
    if args.data_dir is not None and not os.path.isdir(args.data_dir):
        raise UsageError(f"--data-dir {args.data_dir!r} does not exist or is not a directory.")
    spec = args.dataset
    if spec.lower().startswith("folder:") and not os.path.isdir(spec[7:]):
        raise UsageError(f"--dataset {spec!r}: directory {spec[7:]!r} does not exist.")


# Python arguments of library functions that an option of another name sets:
# aw_keras.data.get_source(spec, ...) gets --dataset.
_OPTION_DESTS = {"spec": "dataset"}


def option_message(message, parser):
    """A library error ``message`` as the user of ``parser`` needs it: each
    `python_argument` in single backticks becomes the option that sets it
    (`data_dir` -> --data-dir, `resume=True` -> --resume); other text is kept."""
    actions = {action.dest: action for action in parser._actions if action.option_strings}

    def option(match):
        name, assignment = match.groups()
        action = actions.get(_OPTION_DESTS.get(name, name))
        if action is None or (assignment and action.nargs != 0):
            return match.group(0)
        return max(action.option_strings, key=len)  # --help, not -h

    return re.sub(r"`(\w+)(=True)?`", option, message)


def check_backend(args, backend):
    """What runs only on TensorFlow today, as far as the flags say (an FPN
    backbone given without --detector is refused by `check_early`, once the
    registry may be imported); raises ValueError."""
    if backend == "tensorflow":
        return
    if args.strategy:
        raise ValueError(f"--strategy {args.strategy} is tf.distribute: use --backend "
                         f"tensorflow (got --backend {backend}).")
    if args.detector in TENSORFLOW_ONLY_DETECTORS:
        raise ValueError(detector_backend_message(args.detector, backend))


def detector_backend_message(detector, backend):
    return (f"--detector {detector} runs on --backend tensorflow only for now (got --backend "
            f"{backend}); --detector retinanet runs on every backend (docs/backends.md).")


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    backend = args.backend or os.environ.get("KERAS_BACKEND") or "tensorflow"
    try:
        check_backend(args, backend)
        keras_backend.select_backend(backend)
    except ValueError as error:
        parser.error(f"--backend {backend}: {error}")
    try:  # after parsing: --help and usage errors need no TensorFlow
        tf_quiet.import_tensorflow("aw-train (its input pipelines are tf.data)")
    except ImportError as error:
        parser.error(str(error))
    from aw_keras.data import DataError
    from aw_keras.train.run import RunConfig
    from aw_keras.train.run import UsageError

    try:
        check_early(args)
        config = RunConfig(
            model=args.model.lower(), dataset=args.dataset, out=args.out, epochs=args.epochs,
            batch_size=args.batch_size, data_dir=args.data_dir, preset=args.preset,
            model_kwargs=args.model_kwargs, seed=args.seed, learning_rate=args.learning_rate,
            train_examples=args.train_examples, val_examples=args.val_examples,
            resume=args.resume, mixed_precision=args.mixed_precision, jit=args.jit,
            strategy=args.strategy, checkpoint_steps=args.checkpoint_steps,
            keep_checkpoints=args.keep_checkpoints, attention_images=args.attention_images,
            verbose=args.verbose, init_from=args.init_from, detector=args.detector,
            detector_kwargs=args.detector_kwargs, image_size=args.image_size)
        if config.detector:
            from aw_keras.train.detection import train_detector

            train_detector(config)
        else:
            from aw_keras.train.run import train

            train(config)
    except (UsageError, DataError) as error:
        print(f"aw-train: error: {option_message(str(error), parser)}", file=sys.stderr,
              flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
