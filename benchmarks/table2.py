"""Parameters and FLOPs of the paper's Table 2 backbones (ResNet-FPN variants).

The paper's Table 2 (Sec. 4.2) compares Faster R-CNN on COCO with ResNet101-FPN
backbones whose FPN lateral and output convs are AW-convolutions (AW), have a
SE / CBAM block right before them, or both (AW-SE, AW-CBAM). It reports mAP
only; this script adds what the paper does not give: the trainable parameters
and multiply-adds (`aw_keras.utils.count_flops`, the convention of
docs/table1.md) of every variant's backbone + FPN (no detection heads), and
what each variant adds over the plain FPN.

Configurations (``--configs``, all by default):

- ``resnet101``: ResNet101-FPN, P2..P6 (``levels="two_stage"``, Faster R-CNN),
  800x1333 (the usual PyTorch Faster R-CNN input: shorter side 800, longer side
  at most 1333);
- ``resnet50``: ResNet50-FPN, the same setting;
- ``small``: the demo's small body (`resnet_small_fpn`, 64 FPN channels), P2..P6,
  128x128;
- ``small_retinanet``: the same with P3..P7 (``levels="retinanet"``), the levels
  of the project's RetinaNet detector.

FLOPs are counted from the layers' static shapes: the backbones are built
(random weights) but never run. ``--size HxW`` replaces every configuration's
input size (the tests use it).

Usage: python benchmarks/table2.py [--output docs/table2.md]
    [--configs resnet101,resnet50,small,small_retinanet] [--size HxW]
"""

import argparse
import collections
import os
import platform
import shlex
import sys

# The paper's Table 2 variants in its row order: (variant, label suffix).
VARIANTS = (
    ("plain", "FPN"),
    ("aw", "AW-FPN"),
    ("se", "SE-FPN"),
    ("aw_se", "AW-SE-FPN"),
    ("cbam", "CBAM-FPN"),
    ("aw_cbam", "AW-CBAM-FPN"),
)
PREFIXES = {"plain": "", "aw": "aw_", "se": "se_", "aw_se": "aw_se_", "cbam": "cbam_",
            "aw_cbam": "aw_cbam_"}

# Table 2 of the paper: Faster R-CNN on COCO val2017, ResNet101 backbones.
# variant -> (mAP@[0.5, 0.95], mAP@0.5, mAP@0.75). No parameter or FLOP numbers.
PAPER_TABLE2 = {
    "plain": (37.13, 58.28, 40.29),
    "aw": (37.76, 59.17, 40.91),
    "se": (38.11, 59.41, 41.33),
    "aw_se": (38.45, 59.70, 41.86),
    "cbam": (37.74, 58.84, 40.77),
    "aw_cbam": (38.19, 59.52, 41.43),
}

# key -> (title, body, registry base name, (height, width), levels, paper rows?)
CONFIGS = collections.OrderedDict([
    ("resnet101", ("ResNet101-FPN, Faster R-CNN levels P2..P6 (the paper's Table 2 setting)",
                   "ResNet101", "resnet101_fpn", (800, 1333), "two_stage", True)),
    ("resnet50", ("ResNet50-FPN, Faster R-CNN levels P2..P6",
                  "ResNet50", "resnet50_fpn", (800, 1333), "two_stage", False)),
    ("small", ("Small body (demo), Faster R-CNN levels P2..P6",
               "ResNetSmall", "resnet_small_fpn", (128, 128), "two_stage", False)),
    ("small_retinanet", ("Small body (demo), RetinaNet levels P3..P7",
                         "ResNetSmall", "resnet_small_fpn", (128, 128), "retinanet", False)),
])

Row = collections.namedtuple("Row", [
    "variant", "label", "name", "params", "gflops", "kernel_gflops", "fpn_params",
    "fpn_gflops", "aw_layers", "se_layers", "cbam_layers", "paper_map"])


def _weights_size(weights):
    return sum(int(w.numpy().size) for w in weights)


def measure_config(key, size=None):
    """Rows (`Row`) of one configuration, in `VARIANTS` order; ``size``: an
    optional (height, width) replacing the configuration's."""
    import keras

    from aw_keras import applications
    from aw_keras.layers import AWConv2D
    from aw_keras.layers import CBAM
    from aw_keras.layers import SqueezeExcite
    from aw_keras.utils import count_flops
    from aw_keras.utils.flops import layer_flops

    _, body, base, default_size, levels, with_paper = CONFIGS[key]
    height, width = size or default_size
    rows = []
    for variant, suffix in VARIANTS:
        name = PREFIXES[variant] + base
        model = applications.get_model(name, input_shape=(height, width, 3), levels=levels)
        params = _weights_size(model.trainable_weights)
        fpn_layers = [layer for layer in model.layers if layer.name.startswith("fpn_")]
        fpn_params = sum(_weights_size(layer.trainable_weights) for layer in fpn_layers)
        body_params = sum(_weights_size(layer.trainable_weights) for layer in model.layers
                          if not layer.name.startswith("fpn_"))
        if body_params + fpn_params != params:
            raise AssertionError(f"{name}: per-layer parameters do not add up")
        kinds = collections.Counter()
        for layer in model.layers:
            for kind, cls in (("aw", AWConv2D), ("se", SqueezeExcite), ("cbam", CBAM)):
                if isinstance(layer, cls):
                    kinds[kind] += 1
        rows.append(Row(
            variant=variant, label=f"{body}-{suffix}", name=name, params=params,
            gflops=count_flops(model) / 1e9,
            kernel_gflops=count_flops(model, include_elementwise=False) / 1e9,
            fpn_params=fpn_params,
            fpn_gflops=sum(layer_flops(layer) for layer in fpn_layers) / 1e9,
            aw_layers=kinds["aw"], se_layers=kinds["se"], cbam_layers=kinds["cbam"],
            paper_map=PAPER_TABLE2[variant] if with_paper else None,
        ))
        del model
        keras.backend.clear_session()
    return rows


def measure(keys=None, size=None):
    """``[(key, (height, width), rows)]`` for the configurations ``keys``."""
    keys = list(CONFIGS) if keys is None else keys
    return [(key, size or CONFIGS[key][3], measure_config(key, size)) for key in keys]


def describe_machine():
    import keras
    import tensorflow as tf

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} CPUs visible, {platform.system()} {platform.release()}; "
            f"Python {platform.python_version()}, TensorFlow {tf.__version__}, "
            f"Keras {keras.__version__}")


def _percent(delta, base):
    return f"{100.0 * delta / base:+.2f}%"


def render_config(key, size, rows):
    title, _, _, _, levels, with_paper = CONFIGS[key]
    height, width = size
    plain = rows[0]
    assert plain.variant == "plain"
    digits = 4 if plain.gflops >= 1 else 5  # small models: show the deltas
    lines = [
        f"## {title}, {height}x{width}",
        "",
        "| backbone (`registry name`) | AW / SE / CBAM layers | params (M) | + params "
        "| + params % | GFLOPs | + GFLOPs | + GFLOPs % | GFLOPs (kernel-only) "
        "| FPN part: params (M) / GFLOPs | paper mAP@[.5:.95] / @.5 / @.75 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        delta_params = row.params - plain.params
        delta_gflops = row.gflops - plain.gflops
        paper = ("{:.2f} / {:.2f} / {:.2f}".format(*row.paper_map) if row.paper_map
                 else "- (not in the paper)")
        lines.append(
            f"| {row.label} (`{row.name}`) | {row.aw_layers} / {row.se_layers} / "
            f"{row.cbam_layers} | {row.params / 1e6:.3f} | {delta_params:+,d} | "
            f"{_percent(delta_params, plain.params)} | {row.gflops:.{digits}f} | "
            f"{delta_gflops:+.{digits}f} | {_percent(delta_gflops, plain.gflops)} | "
            f"{row.kernel_gflops:.{digits}f} | {row.fpn_params / 1e6:.3f} / "
            f"{row.fpn_gflops:.{digits}f} | "
            f"{paper} |"
        )
    fpn_share_params = plain.fpn_params / plain.params
    fpn_share_flops = plain.fpn_gflops / plain.gflops
    lines += [
        "",
        f"The plain FPN part is {100 * fpn_share_params:.1f}% of the parameters and "
        f"{100 * fpn_share_flops:.1f}% of the GFLOPs of the plain backbone; relative to "
        "the FPN part alone the variants add "
        + ", ".join(
            f"{row.label.split('-', 1)[1]} "
            f"{_percent(row.fpn_params - plain.fpn_params, plain.fpn_params)} params / "
            f"{_percent(row.fpn_gflops - plain.fpn_gflops, plain.fpn_gflops)} GFLOPs"
            for row in rows[1:])
        + ".",
    ]
    return "\n".join(lines)


NOTES = """\
## What is counted

- **Backbone + FPN only**: the ResNet body and the feature pyramid
  (`applications/fpn.py`, `FPNBackbone`). The detection heads (RPN and the
  Faster R-CNN box head, or RetinaNet's heads) are *not* included: the
  variants differ only in the FPN, so the heads add the same to every row,
  and their cost depends on the detector (proposal count, head design).
  "+ params", "+ GFLOPs" and their % are relative to the plain backbone + FPN
  of the same table; "FPN part" counts the layers named `fpn_*` (laterals,
  output convs, their attention blocks, the top-down merges, P6).
- **params**: trainable parameters, the convention of `docs/table1.md` (BN
  gamma/beta count, moving statistics do not; FPN convs have a bias, AW's
  pointconvs and the ResNet convs do not). A detector that freezes BN or early
  stages (torchvision's `FrozenBatchNorm2d`, `trainable_backbone_layers`)
  trains fewer of them; the architecture is the same.
- **GFLOPs**: multiply-adds per image from `aw_keras.utils.count_flops`, the
  convention of `docs/table1.md`, counted from the layers' static shapes
  (the models are built, never run). For the FPN: lateral (1x1) and output
  (3x3) convs count their kernel MACs; AW adds its attention branch (adaptive
  pooling of the input, Pointconv1/2 at the kh x kw pooled positions, one MAC
  per kernel element for `AK = K + A*K`); SE and CBAM count pooling, their MLP,
  the channel max/mean and 7x7 conv of CBAM's spatial gate, and the rescales;
  the nearest-neighbour upsampling, the crop to the lateral's size, the
  top-down `Add` merges and the input `Rescaling` count 0 (copies, and adds /
  a scale that the convention counts 0, as residual adds and BN); P6 (max pool,
  window 1, stride 2) counts one op per output element. "kernel-only" is
  `count_flops(..., include_elementwise=False)`.
- **Input size**: the paper does not state one; 800x1333 is the default of
  PyTorch Faster R-CNN (torchvision, mmdetection, detectron2: shorter side
  800, longer side at most 1333), used unpadded here. Those libraries pad the
  batch to a multiple of 32 (800x1344), which adds about 0.8% to every row.

## Readings used

- Placement (Sec. 4.2): "all the lateral and output convolutions of the FPN
  adopt our AW-convolution. The SE and CBAM modules are placed right before
  the lateral and output convolutions." With P2..P6 that is 4 lateral and 4
  output convs, so 8 AWConv2D and/or 8 SE / CBAM blocks (6 each with P3..P7,
  whose lateral and output convs exist for P3..P5 only); the extra levels
  (P6, and P7 for RetinaNet) and the ResNet body stay plain. The "AW / SE /
  CBAM layers" column counts these layers in the whole backbone.
- AW: the Table 1 setting (`r = 16`, `r_C1 = C1`, `r_C2 = r_hw = 1`): on a
  256-channel FPN conv Pointconv1 has 16 channels.
- SE: hidden width `C // 16`. CBAM: the full CBAM (average- and max-pooled
  channel gate, then the 7x7 spatial gate); the paper does not say which CBAM
  it used in Table 2.

## The paper's Table 2

The paper reports COCO mAP of Faster R-CNN with ResNet101-FPN backbones only
(PyTorch); it gives **no parameter or FLOP numbers** for Table 2 and no
ResNet50-FPN or small-body rows (marked "-"). Its "+0.63%" style increments
are AP points over the plain ResNet101-FPN, not percent.
"""


def render(results, command, machine):
    lines = [
        "# Table 2: parameters and FLOPs of the FPN backbones",
        "",
        f"Generated by `{command}`",
        f"on {machine}.",
        "Parameters and FLOPs do not depend on the machine.",
        "",
    ]
    for key, size, rows in results:
        lines += [render_config(key, size, rows), ""]
    return "\n".join(lines) + "\n" + NOTES


def _parse_size(text):
    try:
        height, width = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HxW, e.g. 800x1333, got {text!r}") from None
    return height, width


def _parse_configs(text):
    keys = [key.strip() for key in text.split(",") if key.strip()]
    unknown = [key for key in keys if key not in CONFIGS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(
            f"unknown configuration(s) {unknown or text!r}; choose from {', '.join(CONFIGS)}")
    return keys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parser.add_argument("--output", default=os.path.join(root, "docs", "table2.md"))
    parser.add_argument("--configs", type=_parse_configs, default=list(CONFIGS),
                        help=f"comma-separated subset of {','.join(CONFIGS)}")
    parser.add_argument("--size", type=_parse_size, default=None,
                        help="HxW replacing every configuration's input size")
    args = parser.parse_args(argv)
    command = " ".join(["python benchmarks/table2.py"] + [shlex.quote(a) for a in argv])
    results = measure(args.configs, args.size)
    text = render(results, command, describe_machine())
    with open(args.output, "w") as handle:
        handle.write(text)
    sys.stdout.write(text)


if __name__ == "__main__":
    main()
