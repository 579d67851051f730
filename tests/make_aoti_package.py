# Makes the AOTInductor packages tests/cuda_test.cpp loads, with the torch it runs under (2.8 or
# later): a small model exported with torch.export and compiled for CUDA (scorer_cuda.pt2) and for
# the CPU (scorer_cpu.pt2), beside an input and the eager model's output for it (io_*.pt).
#   python3 tests/make_aoti_package.py DIR
import sys
import torch

out = sys.argv[1]
torch.manual_seed(0)


class Scorer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return torch.relu(self.fc(x)) * 2


made = 0
for device in ("cuda", "cpu"):
    try:
        m = Scorer().to(device).eval()
        x = torch.randn(2, 4, device=device)
        with torch.no_grad():
            y = m(x)
        ep = torch.export.export(m, (x,))
        torch._inductor.aoti_compile_and_package(ep, package_path=f"{out}/scorer_{device}.pt2")
        torch.save((x.cpu(), y.cpu()), f"{out}/io_{device}.pt")
        print(f"made {out}/scorer_{device}.pt2")
        made += 1
    except Exception as e:  # noqa: BLE001 - report and go on to the other device
        print(f"no package for {device}: {type(e).__name__}: {e}")
sys.exit(0 if made else 1)
