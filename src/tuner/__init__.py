"""tuner: the contrastive-tuning stage that feeds probekit (arXiv 2309.11895, stage 1).

Needs torch (``pip install 'probekit[tuner]'``). So far: :mod:`tuner.losses` (SupCon,
Jaccard-weighted multi-label SupCon, NT-Xent), :mod:`tuner.sampling` (m-per-class batches) and
:mod:`tuner.heads` (the projection head). Encoders and training follow (issue 5).
"""
