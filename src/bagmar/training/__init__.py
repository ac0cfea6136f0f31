"""Training: how the method runs, fast, with checkpoints.

- ``loop``: the one training loop (epochs, checkpoints and exact resume, history, progress, the non-finite check);
- ``engine``: the fused engine: K models of one split as one network (``fused_network``), device-side SGD,
  CUDA-graph replay;
- ``train``: CIFAR trainings, whose steps come from the engine (a group of one, or a fused group);
- ``image_train``: image-list trainings, whose steps come from a DataLoader, on one process or under DDP;
- ``distributed``: data-parallel ranks (statistics gathered across them); ``image_job``: torchrun and SLURM launch;
- ``checkpoint``: per-epoch checkpoints, written atomically, read without unpickling arbitrary objects.
"""
