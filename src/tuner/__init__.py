"""tuner: the contrastive-tuning stage that feeds probekit (arXiv 2309.11895, stage 1).

Needs torch (``pip install 'probekit[tuner]'``). So far: :mod:`tuner.losses` (SupCon,
Jaccard-weighted multi-label SupCon, NT-Xent), :mod:`tuner.sampling` (m-per-class batches) and
:mod:`tuner.heads` (the projection head), :mod:`tuner.adapter` (a residual adapter on
frozen embeddings, behind ``probekit tune``) and :mod:`tuner.encoders` (pooling, partial
freezing). Pre-trained audio encoders and the GPU training loop follow (issue 5).
"""
