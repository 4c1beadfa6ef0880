"""Run under torchrun by tests/test_resume_ddp.py: train, then dump this rank's weights."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import gankit

out = Path(sys.argv[1])
model, data = sys.argv[2], sys.argv[3]
over = sys.argv[4:]
run = gankit.train(model, data, out=out / "run", overrides=over, progress=False)
rank = run.trainer.dist.rank
nets = {**run.trainer.nets, **{f"{k}_ema": m for k, m in run.trainer.sampling_nets().items()}}
save_file({f"{n}.{k}": v.contiguous() for n, m in nets.items() for k, v in m.state_dict().items()},
          out / f"rank{rank}.safetensors")
torch.distributed.destroy_process_group()
