"""tuner: the contrastive-tuning stage that feeds probekit (see issue 5; not built yet)."""
