"""PyTorch twins of remora's remote()+to_here() figure (rpc.remote(...).to_here() of a small value)
and of its builtin-operator call (rpc.rpc_sync(to, torch.add, ...) of two 4-byte tensors).

usage: /usr/bin/python3 benchmarks/pytorch_rref.py [--n 2000] [--port 29612]
Two processes on this host (TensorPipe agent); worker 0 creates a 4-byte tensor on worker 1 with
rpc.remote and fetches it with to_here(), one at a time, and prints p50/p99 in microseconds.
"""
import argparse, os, time, torch
import torch.distributed.rpc as rpc
import torch.multiprocessing as mp


def make(x):
    return x


def run(rank, args):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(args.port)
    opts = rpc.TensorPipeRpcBackendOptions(num_worker_threads=8)
    rpc.init_rpc(f"w{rank}", rank=rank, world_size=2, rpc_backend_options=opts)
    if rank == 0:
        x = torch.ones(1)
        for _ in range(100):
            rpc.remote("w1", make, args=(x,)).to_here()
        us = []
        for _ in range(args.n):
            t = time.perf_counter()
            rpc.remote("w1", make, args=(x,)).to_here()
            us.append((time.perf_counter() - t) * 1e6)
        us.sort()
        print(f"remote+to_here 4B: p50 {us[len(us)//2]:.1f} us, p99 {us[len(us)*99//100]:.1f} us", flush=True)
        for _ in range(100):
            rpc.rpc_sync("w1", torch.add, args=(x, x))
        us = []
        for _ in range(args.n):
            t = time.perf_counter()
            rpc.rpc_sync("w1", torch.add, args=(x, x))
            us.append((time.perf_counter() - t) * 1e6)
        us.sort()
        print(f"builtin torch.add 4B: p50 {us[len(us)//2]:.1f} us, p99 {us[len(us)*99//100]:.1f} us", flush=True)
    rpc.shutdown()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--port", type=int, default=29612)
    args = p.parse_args()
    mp.spawn(run, args=(args,), nprocs=2)
