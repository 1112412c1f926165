"""tuner: the contrastive-tuning stage that feeds probekit (arXiv 2309.11895, stage 1).

Needs torch (``pip install 'probekit[tuner]'``). So far: :mod:`tuner.losses` (SupCon,
Jaccard-weighted multi-label SupCon, NT-Xent). Encoders, sampling and training follow (issue 5).
"""
