"""The training commands of ``probekit``: tune, finetune, embed and manifest.

probekit.cli registers them on its group, which also turns their errors into one line and an
exit status. They need the tuner package (and torch), which is imported inside their bodies,
never when probekit (or this module) is imported.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import click
import numpy as np

from probekit import cli_options as opt
from probekit.cli_options import FILE, FOLDER, check_outputs, check_rows
from probekit.errors import InputError, install_hint
from probekit.files import write_atomically


@click.command()
@click.argument("embeddings", type=FILE)
@click.argument("labels", type=FILE)
@click.option("--apply", "apply_paths", multiple=True, type=FILE,
              help="Embeddings to pass through the tuned adapter too (repeatable).")
@opt.out_folder(help="Folder for the tuned embeddings and the adapter.")
@click.option("--objective", type=click.Choice(["supcon", "ce"]), default="supcon",
              show_default=True, help="Supervised contrastive, or the cross-entropy baseline.")
@opt.epochs(default=30)
@opt.batch_size(default=128)
@opt.m()
@opt.lr(default=3e-3)
@opt.temperature(default=0.07)
@opt.seed()
@opt.key()
@opt.label_column()
@opt.quiet(help="No per-epoch loss on stderr.")
def tune(embeddings, labels, apply_paths, out_dir, objective, epochs, batch_size, m, lr,
         temperature, seed, key, label_column, quiet):
    """Tune a small residual adapter on frozen EMBEDDINGS with LABELS (supervised contrastive
    by default) and write the tuned embeddings to --out, ready for probekit evaluate."""
    from probekit.arrays import to_float32
    from probekit.data import load_embeddings, load_labels
    from probekit.validate import check_lengths

    try:
        from tuner.adapter import AdapterConfig, apply_adapter, train_adapter
        from tuner.train import save_checkpoint
    except ImportError:
        raise InputError(f"probekit tune needs torch: {install_hint('tuner')}") from None
    written = [embeddings, *apply_paths]
    targets = {f"tuned embeddings of {path}": out_dir / f"{path.stem}.tuned.npy"
               for path in written}
    if len(set(targets.values())) < len(targets):
        stems = [path.stem for path in written]
        clash = sorted({stem for stem in stems if stems.count(stem) > 1})
        raise InputError(f"two inputs share the name {clash[0]}: their tuned embeddings "
                         f"would both be {clash[0]}.tuned.npy in {out_dir}; rename one")
    check_outputs([embeddings, labels, *apply_paths],
                  {**targets, "adapter weights": out_dir / "adapter.pt",
                   "adapter settings": out_dir / "adapter.json"})
    X = load_embeddings(embeddings, key=key)
    y = load_labels(labels, column=label_column)
    check_rows(X.shape[0], y, labels)
    check_lengths(X, y)
    applied = [(path, load_embeddings(path, key=key)) for path in apply_paths]
    for path, other in applied:
        if other.shape[1] != X.shape[1]:
            raise InputError(f"{path.name} has {other.shape[1]} dimensions, the training "
                             f"embeddings {X.shape[1]}")
    config = AdapterConfig(objective=objective, epochs=epochs, batch_size=batch_size, m=m,
                           lr=lr, temperature=temperature, seed=seed)
    try:
        adapter, history = train_adapter(
            to_float32(X), y, config,
            log=None if quiet else lambda epoch, loss: click.echo(
                f"epoch {epoch + 1}/{epochs}: loss {loss:.4f}", err=True))
    except ValueError as error:
        raise InputError(str(error)) from None
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = [(embeddings, X)] + applied
    for path, rows in outputs:
        target = out_dir / f"{path.stem}.tuned.npy"
        try:
            tuned = apply_adapter(adapter, to_float32(rows))
        except ValueError as error:
            raise InputError(f"{path.name}: {error}") from None
        write_atomically(target, _npy(tuned))
        click.echo(f"tuned embeddings written to {target}", err=True)
    save_checkpoint(out_dir / "adapter.pt", adapter.state_dict())
    write_atomically(out_dir / "adapter.json", json.dumps(
        {"config": dataclasses.asdict(config), "loss_per_epoch": history,
         "dim": int(X.shape[1]), "trained_on": embeddings.name}, indent=2) + "\n")


@click.command()
@click.argument("train_manifest", type=FILE)
@opt.encoder()
@opt.pooling(help="Pooling of frame features (Hugging Face encoders).")
@click.option("--val", "val_manifest", type=FILE,
              default=None, help="Validation manifest: probed every --probe-every epochs to "
              "choose the best checkpoint.")
@click.option("--embed", "embed_manifests", multiple=True, type=FILE,
              help="More manifests to embed with the tuned encoder (repeatable), e.g. the "
              "test set.")
@opt.out_folder(help="Folder for checkpoints, log.json and embeddings.")
@click.option("--objective", type=click.Choice(["supcon", "jaccard", "ce"]), default="supcon",
              show_default=True, help="SupCon, Jaccard SupCon (multi-label) or cross-entropy.")
@opt.epochs(default=10)
@opt.batch_size(default=64, help="Global batch (all processes together).")
@opt.m(help="Samples per class in a SupCon batch.")
@opt.lr(default=1e-4)
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-4, show_default=True)
@click.option("--warmup-epochs", type=click.FloatRange(min=0), default=1.0, show_default=True)
@opt.temperature(default=0.07)
@click.option("--head-dim", type=click.IntRange(min=0), default=128, show_default=True,
              help="Projection-head size; 0 puts the loss on the encoder output.")
@click.option("--train-last", type=click.IntRange(min=0), default=None,
              help="Freeze all but the last N blocks of the encoder.")
@opt.max_seconds(help="Crop longer clips (randomly in training, centred otherwise).")
@click.option("--probe-every", type=click.IntRange(min=0), default=1, show_default=True)
@click.option("--probe-metric", default="knn_weighted@20", show_default=True,
              help="knn_weighted@K, knn_majority@K or linear: picks the best checkpoint.")
@click.option("--embed-from", type=click.Choice(["encoder", "head"]), default="encoder",
              show_default=True, help="Probe and write the encoder or the head output.")
@opt.device(help="auto, cpu, cuda or cuda:N.")
@opt.amp(help="bf16 autocast on CUDA.")
@click.option("--num-workers", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--cache-audio", is_flag=True, help="Keep decoded clips in memory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt.")
@opt.seed()
@opt.quiet(help="No progress bar or epoch lines.")
def finetune(train_manifest, encoder_spec, pooling, val_manifest, embed_manifests, out_dir,
             objective, epochs, batch_size, m, lr, weight_decay, warmup_epochs, temperature,
             head_dim, train_last, max_seconds, probe_every, probe_metric, embed_from, device,
             amp, num_workers, cache_audio, resume, seed, quiet):
    """Fine-tune a pre-trained audio encoder on the clips of TRAIN_MANIFEST (a CSV with path
    and label columns; several labels separated by ';'), then write its embeddings of every
    manifest to --out for probekit evaluate. Runs under torchrun --nproc_per_node=N too."""
    tuner = _import_tuner()
    encoder = _load_encoder(tuner, encoder_spec, pooling)
    if train_last is not None:
        try:
            tuner.freeze_all_but_last(encoder, train_last)
        except ValueError as error:
            raise InputError(f"--train-last: {error}") from None
    _check_stems([train_manifest, val_manifest, *embed_manifests])
    try:  # the process group's backend follows --device (gloo on the CPU, NCCL on CUDA)
        rank = tuner.init_distributed(device)[0]
    except ValueError as error:
        raise InputError(str(error)) from None
    audio = {"sample_rate": encoder.sample_rate, "max_seconds": max_seconds,
             "cache": cache_audio, "seed": seed}
    train = _read_clips(tuner, train_manifest, audio, random_crop=True)
    val = (_read_clips(tuner, val_manifest, audio, like=train)
           if val_manifest is not None else None)
    extra = [(path, _read_clips(tuner, path, audio, like=train)) for path in embed_manifests]
    config = tuner.TrainConfig(
        objective=objective, epochs=epochs, batch_size=batch_size, m=m, lr=lr,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, temperature=temperature,
        head_dim=head_dim or None, device=device, amp=amp, seed=seed,
        probe_every=probe_every, probe_metric=probe_metric, embed_from=embed_from,
        num_workers=num_workers, progress=not quiet, verbose=not quiet)
    try:
        result = tuner.fit(encoder, train, val, config, out_dir=out_dir, resume=resume)
    except ValueError as error:
        raise InputError(_error_text(error)) from None
    finally:
        tuner.end_distributed()
    if rank != 0:
        return
    evaluation = [(train_manifest, _read_clips(tuner, train_manifest, audio, like=train))]
    evaluation += [(val_manifest, val)] if val is not None else []
    head = result.head if embed_from == "head" else None
    _write_embeddings(tuner, encoder, evaluation + extra, out_dir, device, amp, head, quiet)


@click.command()
@click.argument("dataset", type=click.Choice(["esc50", "speech-commands", "fsd50k"]))
@click.argument("root", type=FOLDER)
@opt.out_folder(help="Folder for the manifests.")
def manifest(dataset, root, out_dir):
    """Build path,label manifests with the official splits of DATASET (esc50: 5 folds;
    speech-commands: v2 validation/testing lists; fsd50k: multi-label) from its metadata files
    under ROOT, for probekit finetune / embed."""
    try:
        from tuner.manifests import build
    except ImportError as error:
        raise InputError(f"this command needs the tuner package: {install_hint('tuner')} "
                         f"({error})") from None
    try:
        counts = build(dataset, root, out_dir)
    except ValueError as error:
        raise InputError(str(error)) from None
    for name, count in counts.items():
        click.echo(f"{out_dir / name}: {count} clips")


@click.command("embed")
@click.argument("manifests", nargs=-1, required=True, type=FILE)
@opt.encoder()
@opt.pooling()
@click.option("--checkpoint", type=FILE, default=None,
              help="A probekit finetune checkpoint (best.pt/last.pt) to load into the encoder.")
@opt.out_folder(help="Folder for NAME.npy and NAME.labels.txt per manifest.")
@opt.max_seconds(help="Centre-crop longer clips.")
@opt.device()
@opt.amp()
@opt.quiet(help=None)
def embed_command(manifests, encoder_spec, pooling, checkpoint, out_dir, max_seconds, device,
                  amp, quiet):
    """Embed the clips of MANIFESTS with a pre-trained (or --checkpoint fine-tuned) encoder:
    the stage-two input of probekit evaluate, and the before-tuning baseline."""
    tuner = _import_tuner()
    encoder = _load_encoder(tuner, encoder_spec, pooling)
    if checkpoint is not None:
        try:
            tuner.load_encoder(encoder, checkpoint)
        except (ValueError, RuntimeError, KeyError) as error:
            detail = " ".join(str(error).split())[:300]
            raise InputError(f"{checkpoint.name} does not fit encoder {encoder_spec}: "
                             f"{detail}") from None
    audio = {"sample_rate": encoder.sample_rate, "max_seconds": max_seconds}
    first = _read_clips(tuner, manifests[0], audio)
    datasets = [(manifests[0], first)] + [
        (path, _read_clips(tuner, path, audio, like=first)) for path in manifests[1:]]
    _write_embeddings(tuner, encoder, datasets, out_dir, device, amp, None, quiet)


def _import_tuner() -> SimpleNamespace:
    """What the audio commands use from tuner (torch is imported here, never by probekit's
    core)."""
    try:
        from tuner.data import AudioDataset
        from tuner.distributed import end_distributed, init_distributed
        from tuner.embed import embed
        from tuner.encoders import encoder_from_spec, freeze_all_but_last
        from tuner.train import TrainConfig, fit, load_encoder
    except ImportError as error:
        raise InputError(f"this command needs torch: {install_hint('tuner')} "
                         f"({error})") from None
    return SimpleNamespace(
        AudioDataset=AudioDataset, end_distributed=end_distributed,
        init_distributed=init_distributed, embed=embed, encoder_from_spec=encoder_from_spec,
        freeze_all_but_last=freeze_all_but_last, TrainConfig=TrainConfig, fit=fit,
        load_encoder=load_encoder)


def _load_encoder(tuner, spec: str, pooling: str):
    try:
        return tuner.encoder_from_spec(spec, pooling)
    except (ImportError, ValueError, FileNotFoundError) as error:
        raise InputError(str(error)) from None


def _read_clips(tuner, manifest: Path, audio: dict, *, random_crop=False, like=None):
    """The AudioDataset of a manifest; ``like``: use that (training) set's classes."""
    options = dict(audio, random_crop=random_crop)
    if like is not None:
        options.update(classes=like.classes, multi_label=like.targets.ndim == 2)
    try:
        return tuner.AudioDataset.from_manifest(manifest, **options)
    except (ValueError, FileNotFoundError) as error:
        message = str(error)
        raise InputError(message if manifest.name in message
                         else f"{manifest.name}: {message}") from None


def _write_embeddings(tuner, encoder, datasets, out_dir: Path, device, amp, head, quiet) -> None:
    """``NAME.npy`` and ``NAME.labels.txt`` (``NAME.labels.npy`` multi-hot for multi-label
    data) in ``out_dir`` for every (manifest, dataset)."""
    _check_stems([path for path, _ in datasets])
    out_dir.mkdir(parents=True, exist_ok=True)
    for path, dataset in datasets:
        try:
            rows = tuner.embed(encoder, dataset, head=head, device=device, amp=amp)
        except ValueError as error:
            raise InputError(f"{path.name}: {_error_text(error)}") from None
        target = out_dir / f"{path.stem}.npy"
        write_atomically(target, _npy(rows))
        if dataset.targets.ndim == 2:
            write_atomically(out_dir / f"{path.stem}.labels.npy", _npy(dataset.targets))
        else:
            names = [str(dataset.classes[code]) for code in dataset.targets]
            write_atomically(out_dir / f"{path.stem}.labels.txt", "\n".join(names) + "\n")
        if not quiet:
            click.echo(f"{rows.shape[0]} x {rows.shape[1]} embeddings of {path.name} written "
                       f"to {target}", err=True)


def _check_stems(manifests) -> None:
    """Embeddings are written as NAME.npy: two manifests with one name would collide."""
    stems = [path.stem for path in manifests if path is not None]
    if len(set(stems)) != len(stems):
        raise InputError(f"two manifests share a name ({', '.join(stems)}): their embeddings "
                         "would overwrite each other")


def _error_text(error: Exception) -> str:
    """The message of an error, without the worker traceback that DataLoader workers wrap
    around it (``Caught ValueError in DataLoader worker process 0. Original Traceback ...``)."""
    text = str(error).strip()
    if "Original Traceback" in text:
        text = text.splitlines()[-1].partition(": ")[2] or text.splitlines()[-1]
    return text


def _npy(array: np.ndarray):
    """The writer of ``array`` as a .npy file, for :func:`probekit.files.write_atomically`."""
    return lambda stream: np.save(stream, array)
