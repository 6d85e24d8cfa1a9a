#!/usr/bin/env python3
"""Train a keras_vit ViT with PyTorch's DistributedDataParallel (KERAS_BACKEND=torch).

Under the torch backend a Keras model is a `torch.nn.Module` whose parameters are its
variables, so PyTorch's own data parallelism applies, as in Keras's guide "Multi-GPU
distributed training with PyTorch": torchrun starts one process per GPU (NCCL) or several
on the CPU (gloo); each builds the model, takes its share of every global batch (a
`DistributedSampler`) and runs a plain PyTorch loop, and DDP averages the gradients so that
every process takes the same step as one process would on the whole batch.

    KERAS_BACKEND=torch torchrun --nproc_per_node=2 examples/torch_ddp.py --steps 20
    KERAS_BACKEND=torch torchrun --nproc_per_node=8 examples/torch_ddp.py \\
        --batch-size 256 --model image_size=224 --model patch_size=16 --model hidden_dim=192 \\
        --model num_heads=3 --model mlp_dim=768 --model num_layers=12 --model num_classes=1000

The images here are random (replace `synthetic_data` with yours). tests/test_multi_process.py
runs `setup`, `distributed`, `loader` and `train` in two gloo processes and checks that they
end with the weights of one process trained on the whole batches.
"""

import argparse
import json
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset  # noqa: E402

from keras_vit import ViT  # noqa: E402

MODEL = dict(image_size=32, patch_size=4, hidden_dim=64, num_layers=4, num_heads=4,
             mlp_dim=128, num_classes=10)


def setup():
    """Joins the process group that torchrun describes (its environment variables): NCCL
    with a GPU for each process, else gloo. Returns this process's device."""
    if torch.cuda.is_available():
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)  # Keras makes its variables on the current device
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return device


def distributed(model, device):
    """`model` in DDP, which starts every process from rank 0's weights. Those include
    Keras's seed-generator states (non-trainable parameters), so each rank then shifts
    its seeds: dropout masks differ between the halves of a batch, as on one device."""
    ddp = DistributedDataParallel(model, device_ids=None if device.type == "cpu" else [device])
    for variable in model.non_trainable_variables:
        if variable.path.endswith("seed_generator_state"):
            variable.assign(variable + np.array([dist.get_rank(), 0], "int32"))
    return ddp


def loader(images, labels, global_batch):
    """This process's part of every global batch: with DDP, rank r of n gets the samples
    r, r + n, r + 2n, ... of each (in order: shuffling is yours to add)."""
    dataset = TensorDataset(torch.as_tensor(images), torch.as_tensor(labels))
    if not dist.is_initialized():
        return DataLoader(dataset, batch_size=global_batch)
    sampler = DistributedSampler(dataset, shuffle=False)
    return DataLoader(dataset, batch_size=global_batch // dist.get_world_size(),
                      sampler=sampler)


def train(model, batches, steps, device, lr=0.05, momentum=0.9):
    """`steps` steps of SGD on the mean cross-entropy of each batch: under DDP, of each
    process's part, and DDP averages their gradients, so the step is that of the mean over
    the global batch. Returns the losses (under DDP, their mean over the processes)."""
    parameters = [p for p in model.parameters() if p.requires_grad]  # not the seed states
    optimizer = torch.optim.SGD(parameters, lr=lr, momentum=momentum)
    losses = []
    for _, (x, y) in zip(range(steps), batches):
        # Keras layers decide dropout by `training`, not by torch's `model.train()`.
        logits = model(x.to(device), training=True)
        loss = torch.nn.functional.cross_entropy(logits, y.to(device))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if dist.is_initialized():
            loss = loss.detach()
            dist.all_reduce(loss)
            loss /= dist.get_world_size()
        losses.append(loss.item())
    return losses


def synthetic_data(config, samples, seed=0):
    """Random 0..255 images (the ViT rescales them itself) and labels, the same in every
    process."""
    rng = np.random.default_rng(seed)
    size = config["image_size"]
    images = rng.uniform(0, 255, (samples, size, size, config.get("num_channels", 3)))
    return images.astype("float32"), rng.integers(0, config["num_classes"], samples)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=32, help="global: all processes")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--model", action="append", default=[], metavar="KEY=VALUE",
                   help="a ViT argument (a JSON value), over the small default")
    p.add_argument("--save", help="where rank 0 writes the trained model (.keras)")
    args = p.parse_args()
    config = dict(MODEL, **{k: json.loads(v) for k, v in (m.split("=", 1) for m in args.model)})

    device = setup()
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} is not divisible by {world} processes")
    keras.utils.set_random_seed(0)  # DDP would copy rank 0's initial weights anyway
    model = ViT(**config)
    images, labels = synthetic_data(config, args.steps * args.batch_size)
    losses = train(distributed(model, device), loader(images, labels, args.batch_size),
                   args.steps, device, lr=args.lr)
    if rank == 0:
        print(f"{world} processes ({dist.get_backend()}), losses: "
              + " ".join(f"{loss:.4f}" for loss in losses))
        if args.save:
            model.save(args.save)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
