"""PyTorch twin of remora's train_bench: time per training step of a two-stage MLP split over two
workers (stage 1 on s1, stage 2 on s2, each a RemoteModule), driven by a trainer with
dist_autograd and DistributedOptimizer, as PyTorch's model-parallel RPC tutorial trains.

usage: /usr/bin/python3 benchmarks/baselines/pytorch_dist_train.py [--port 29613] [--sizes small,large]
                                                                   [--transports uv]
Three processes on this host (TensorPipe agent). By default TensorPipe picks its transport, which
on one host is shared memory (shm); `--transports uv` makes it TCP, as remora's REMORA_TRANSPORT=tcp.
Prints `train_<size>_step_us <median>` lines.
"""
import argparse, os, time, torch
import torch.distributed.autograd as dist_autograd
import torch.distributed.rpc as rpc
import torch.multiprocessing as mp
import torch.nn as nn
from torch.distributed.nn import RemoteModule
from torch.distributed.optim import DistributedOptimizer

SIZES = [("small", 8, 16, 32, 4, 100, 1000), ("large", 256, 1024, 1024, 1024, 3, 20)]


class Layer(nn.Module):
    def __init__(self, n_in, n_out, relu):
        super().__init__()
        self.fc = nn.Linear(n_in, n_out)
        self.relu = relu

    def forward(self, x):
        y = self.fc(x)
        return torch.relu(y) if self.relu else y


def run(rank, args):
    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(args.port)
    opts = rpc.TensorPipeRpcBackendOptions(
        num_worker_threads=8, _transports=args.transports.split(",") if args.transports else None)
    name = ["trainer", "s1", "s2"][rank]
    rpc.init_rpc(name, rank=rank, world_size=3, rpc_backend_options=opts)
    if rank == 0:
        for size, batch, n_in, hidden, n_out, warm, steps in SIZES:
            if size not in args.sizes.split(","):
                continue
            torch.manual_seed(0)
            s1 = RemoteModule("s1/cpu", Layer, args=(n_in, hidden, True))
            s2 = RemoteModule("s2/cpu", Layer, args=(hidden, n_out, False))
            params = s1.remote_parameters() + s2.remote_parameters()
            opt = DistributedOptimizer(torch.optim.SGD, params, lr=0.01)
            x = torch.randn(batch, n_in)
            target = torch.randn(batch, n_out)

            def step():
                with dist_autograd.context() as ctx:
                    loss = torch.nn.functional.mse_loss(s2(s1(x)), target)
                    dist_autograd.backward(ctx, [loss])
                    opt.step(ctx)

            for _ in range(warm):
                step()
            us = []
            for _ in range(steps):
                t = time.perf_counter()
                step()
                us.append((time.perf_counter() - t) * 1e6)
            us.sort()
            print(f"train_{size}_step_us {us[len(us) // 2]:.1f}", flush=True)
    rpc.shutdown()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=29613)
    p.add_argument("--sizes", default="small,large")
    p.add_argument("--transports", default="", help="TensorPipe transports, e.g. uv (default: its own choice)")
    args = p.parse_args()
    mp.spawn(run, args=(args,), nprocs=3)
