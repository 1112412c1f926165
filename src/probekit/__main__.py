"""``python -m probekit`` (and ``torchrun --nproc_per_node=N -m probekit finetune ...``)."""

from probekit.cli import main

main()
