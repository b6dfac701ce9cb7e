"""torchvision's Faster R-CNN as a timing peer, driven over stdin/stdout.

Runs under a Python that has torch and torchvision (not the project's
virtualenv: they are not project dependencies), started by
``detection_speed.py --torchvision-python PATH``. It builds
``fasterrcnn_resnet50_fpn`` with random weights (``weights=None,
weights_backbone=None``: BatchNorm2d, every layer trainable, like ours) at
``min_size = max_size = size`` with the same fixed images and two boxes per image
as the Keras side, then answers one command per line:

- ``train``: one SGD step (lr 0.01, momentum 0.9) in train mode;
- ``infer``: one eval-mode forward under ``torch.no_grad()`` (transform, RPN,
  RoI heads, post-processing);
- ``quit``.

Each answer is ``ok <seconds>`` (the step timed inside this process) or
``error <message>``. The first line written is ``ready <torch> <torchvision>``.

Usage (by hand)::

    /work/torch-peer/bin/python benchmarks/torchvision_peer.py --size 512 --batch 2
"""

import argparse
import sys
import time


def build(size, batch, num_classes, threads):
    import numpy as np
    import torch
    import torchvision
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    if threads:
        torch.set_num_threads(threads)
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                    num_classes=num_classes + 1,  # + background
                                    min_size=size, max_size=size)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    rng = np.random.default_rng(0)
    images = [torch.from_numpy(rng.uniform(0, 1, (3, size, size)).astype(np.float32))
              for _ in range(batch)]
    corners = np.array([[0.1, 0.1, 0.45, 0.5], [0.4, 0.35, 0.9, 0.95]], np.float32) * size
    # the Keras side's labels 3 and 17, shifted past torchvision's background 0
    targets = [{"boxes": torch.from_numpy(corners.copy()),
                "labels": torch.tensor([4, 18], dtype=torch.int64)} for _ in range(batch)]

    def train():
        model.train()
        losses = model(images, targets)
        loss = sum(losses.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    def infer():
        model.eval()
        with torch.no_grad():
            model(images)

    return {"train": train, "infer": infer}, (torch.__version__, torchvision.__version__)


def serve(commands, versions, stdin, stdout):
    stdout.write(f"ready {versions[0]} {versions[1]}\n")
    stdout.flush()
    for line in stdin:
        command = line.strip()
        if command == "quit":
            break
        if command not in commands:
            stdout.write(f"error unknown command {command!r}\n")
        else:
            try:
                start = time.perf_counter()
                commands[command]()
                stdout.write(f"ok {time.perf_counter() - start:.6f}\n")
            except Exception as error:  # noqa: BLE001 - reported to the driver
                stdout.write(f"error {type(error).__name__}: {error}\n".replace("\n", " ")
                             .rstrip() + "\n")
        stdout.flush()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--threads", type=int, default=0,
                        help="torch.set_num_threads (0: torch's default)")
    args = parser.parse_args(argv)
    commands, versions = build(args.size, args.batch, args.num_classes, args.threads)
    serve(commands, versions, sys.stdin, sys.stdout)


if __name__ == "__main__":
    main()
