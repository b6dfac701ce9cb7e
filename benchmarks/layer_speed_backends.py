"""AWConv2D vs Conv2D on Keras's JAX (or PyTorch) backend, per strategy.

The counterpart of `layer_speed.py` (TensorFlow) for the ``keras.ops``
strategies of `aw_keras.layers.ops_kernels`. For each ResNet50 stage shape,
Conv2D and AWConv2D with every strategy are timed interleaved in one process
(round-robin), each compiled (``jax.jit`` of the layer's ``stateless_call``,
or eager on PyTorch): "inference" is a forward call, "train" a forward and
backward pass (gradients for the input and every trainable weight). The table
gives medians and the ratio to the same backend's Conv2D.

    python benchmarks/layer_speed_backends.py --backend jax
    python benchmarks/layer_speed_backends.py --backend jax --shapes 14x14x256 --repeats 5
"""

import argparse
import os
import platform
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("jax", "torch"), default="jax")
    parser.add_argument("--shapes", nargs="+",
                        default=["56x56x64", "28x28x128", "14x14x256", "7x7x512"])
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--modes", nargs="+", choices=("inference", "train"),
                        default=["inference", "train"])
    parser.add_argument("--markdown", help="also write the table to this file")
    return parser.parse_args(argv)


def step_functions(layer, x, backend):
    """{mode: fn()} for one built layer on ``backend``."""
    import keras

    trainable = [v.value for v in layer.trainable_variables]
    non_trainable = [v.value for v in layer.non_trainable_variables]

    takes_training = not isinstance(layer, keras.layers.Conv2D)

    def forward(values, inputs, training):
        kwargs = {"training": training} if takes_training else {}
        out, _ = layer.stateless_call(values, non_trainable, inputs, **kwargs)
        return out

    def loss(values, inputs):
        return keras.ops.mean(keras.ops.square(forward(values, inputs, True)))

    if backend == "jax":
        import jax

        infer = jax.jit(lambda v, i: forward(v, i, False))
        grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
        return {"inference": lambda: infer(trainable, x),
                "train": lambda: grad(trainable, x)[1]}
    import torch

    def torch_train():
        values = [v.detach().requires_grad_(True) for v in trainable]
        inputs = x.detach().requires_grad_(True)
        loss(values, inputs).backward()
        return inputs.grad.detach().cpu()

    def torch_infer():
        with torch.no_grad():
            return forward(trainable, x, False).detach().cpu()

    return {"inference": torch_infer, "train": torch_train}


def main(argv=None):
    args = parse_args(argv)
    os.environ["KERAS_BACKEND"] = args.backend
    sys.path.insert(0, os.path.dirname(__file__))
    import keras
    import numpy as np

    from aw_keras.layers import AWConv2D
    from aw_keras.layers.aw_conv2d import implementations
    from timing import time_interleaved

    strategies = [name for name in implementations(args.backend) if name != "auto"]
    rows = []
    for text in args.shapes:
        height, width, channels = (int(v) for v in text.split("x"))
        x = keras.ops.convert_to_tensor(np.random.default_rng(0).normal(
            size=(args.batch_size, height, width, channels)).astype("float32"))
        layers = {"conv2d": keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)}
        for name in strategies:
            layers[name] = AWConv2D(channels, 3, padding="same", use_bias=False,
                                    implementation=name)
        for layer in layers.values():
            layer.build(x.shape)
        auto = layers[strategies[0]]
        auto.implementation = "auto"
        for mode in args.modes:
            auto_choice = auto.resolved_implementation(tuple(x.shape), mode == "train")
            candidates = {name: step_functions(layer, x, args.backend)[mode]
                          for name, layer in layers.items()}
            times = time_interleaved(candidates, args.repeats, warmup=2)
            base = times["conv2d"]
            rows.append([f"{text}", mode, f"{base * 1e3:.1f}"]
                        + [f"{times[name] / base:.2f}x" for name in strategies] + [auto_choice])
            print(" | ".join(rows[-1]), flush=True)
        auto.implementation = strategies[0]
    header = (["shape", "mode", "Conv2D ms"] + [f"{name} / Conv2D" for name in strategies]
              + ["auto picks"])
    table = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    table += ["| " + " | ".join(row) + " |" for row in rows]
    title = (f"AWConv2D / Conv2D on Keras {keras.__version__}, backend {args.backend}, batch "
             f"{args.batch_size}, 3x3 same, {platform.machine()} ({os.cpu_count()} CPUs), "
             f"medians of {args.repeats} interleaved runs")
    text = title + "\n\n" + "\n".join(table) + "\n"
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as handle:
            handle.write(text)


if __name__ == "__main__":
    main()
