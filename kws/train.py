"""The one training loop: teacher, fine-tuning, distillation and QAT all call `fit` with their
own loss. Each train clip's mel power spectrum is computed once; batches are augmented from it
on the fly (no DataLoader: the whole batch is shifted, noised, log-scaled and masked in a few
vectorized torch ops on the CPU, then moved to the training device)."""
import contextlib
import copy
import math
import time

import torch
import torch.nn.functional as F
from dvclive import Live
from torch.optim.swa_utils import AveragedModel, update_bn

from kws import augment, io, models
from kws.features import FrontEnd
from kws.sources import CLASSES, SILENCE

SILENCE_INDEX = CLASSES.index(SILENCE)


class TrainingFailed(RuntimeError):
    """Training ended with a model no better than a constant guess."""


def majority_share(labels):
    """Accuracy of always answering the most common label: the chance level a model must beat."""
    return torch.bincount(labels).max().item() / len(labels)


def resolve_device(name):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("device: cuda asked for, but torch sees no GPU; use device: auto")
    return name


def cross_entropy(model, feats, labels):
    return F.cross_entropy(model(feats), labels)


def accuracy(model, feats, labels, device="cpu"):
    return (models.logits(model, feats, device=device).argmax(1) == labels).float().mean().item()


def make_optimizer(trainable, p):
    """SGD with momentum (the standard KWS recipe: lr 0.1, momentum 0.9, weight decay 1e-3) or AdamW."""
    if p["optimizer"] == "sgd":
        return torch.optim.SGD(trainable, lr=p["lr"], momentum=p["momentum"], nesterov=True,
                               weight_decay=p["weight_decay"])
    if p["optimizer"] == "adamw":
        return torch.optim.AdamW(trainable, lr=p["lr"], weight_decay=p["weight_decay"])
    raise ValueError(f"optimizer must be sgd or adamw, got {p['optimizer']!r}")


def warmup_cosine(opt, total_steps, warmup_steps):
    """Linear warm-up to the base lr over `warmup_steps`, then cosine decay to 0 at `total_steps`."""
    def factor(step):
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return 0.5 * (1 + math.cos(math.pi * (step - warmup_steps) / max(1, total_steps - warmup_steps)))
    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def fit(model, power, labels, noise_power, feature_config, val_feats, val_labels, p, loss_fn=cross_entropy,
        live=None, set_train=lambda m, on: m.train(on), name="train", extra_params=(), keep="chosen", subset=None):
    """Train `model` for p['epochs'] on mel power spectra [N, n_mels, T] (`features.mel_power`),
    augmented with `noise_power` chunks, and keep the weights p['average_share'] chooses: > 0,
    the mean of the last that share of epochs, BatchNorm statistics re-estimated on one augmented
    pass (stochastic weight averaging); 0, the best validation epoch's (`keep="last"`: the last
    epoch's, whatever the share). Returns {'val_acc' (of the kept weights), 'kept', 'epochs',
    'clip_epochs', 'wall_s', 'history'}.

    `p` is a params block: epochs, batch_size, lr, weight_decay, seed, device, augment,
    average_share. `extra_params` are trained too but not part of the model (a
    distillation adapter; the caller puts it on the device). `subset`: indices of the clips to
    train on (default all), so a memory-mapped `power` is gathered a batch at a time rather than
    copied whole."""
    device = resolve_device(p["device"])
    gen = torch.Generator().manual_seed(p["seed"])
    torch.manual_seed(p["seed"])
    model.to(device)
    front, t_start = FrontEnd(feature_config), time.time()
    subset = torch.arange(len(power)) if subset is None else subset
    n, bs, epochs = len(subset), p["batch_size"], p["epochs"]
    steps = epochs * math.ceil(n / bs)
    trainable = [q for q in model.parameters() if q.requires_grad] + list(extra_params)
    opt = make_optimizer(trainable, p)
    sched = warmup_cosine(opt, steps, p["warmup_epochs"] * math.ceil(n / bs))
    share = p["average_share"] if keep == "chosen" else 0
    averaged = max(1, round(share * epochs)) if share else 0
    average = AveragedModel(model) if averaged else None
    pick_best = keep == "chosen" and not averaged
    best = {"val_acc": -1.0, "state": None, "epoch": 0}
    history = []

    def augmented(order):
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            with torch.no_grad():
                x = augment.augment_batch(power[idx], noise_power, front, p["augment"], gen).to(device)
            yield idx, x  # outside no_grad: the caller's step runs while the generator is paused here

    for epoch in range(1, epochs + 1):
        set_train(model, True)
        t0, total_loss = time.time(), 0.0
        for idx, x in augmented(subset[torch.randperm(n, generator=gen)]):
            loss = loss_fn(model, x, labels[idx].to(device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step_loss = loss.item()
            if not math.isfinite(step_loss):  # stop here rather than hand a NaN model downstream
                raise FloatingPointError(f"[{name}] training diverged: loss {step_loss} at epoch {epoch} "
                                         f"(lr {p['lr']}, {p['optimizer']}); lower the stage's lr")
            total_loss += step_loss * len(idx)
        set_train(model, False)
        val_acc = accuracy(model, val_feats, val_labels, device)
        rate = n / (time.time() - t0)
        row = {"epoch": epoch, "train_loss": total_loss / n, "val_acc": val_acc, "lr": sched.get_last_lr()[0], "clips_per_s": rate}
        history.append(row)
        print(f"[{name}] epoch {epoch}/{epochs}  loss {row['train_loss']:.4f}  val_acc {val_acc:.4f}  "
              f"{rate:.0f} clips/s", flush=True)
        if live is not None:
            for k in ("train_loss", "val_acc", "lr"):
                live.log_metric(k, row[k])
            live.next_step()
        if average is not None and epoch > epochs - averaged:
            average.update_parameters(model)
        if pick_best and val_acc > best["val_acc"]:
            best = {"val_acc": val_acc, "state": copy.deepcopy(model.state_dict()), "epoch": epoch}
    if average is not None:
        # the averaged weights never ran forward: their BatchNorm statistics come from one more
        # augmented pass over the train clips (the inputs the per-epoch statistics came from)
        update_bn((x for _, x in augmented(subset[torch.randperm(n, generator=gen)])), average, device)
        model.load_state_dict(average.module.state_dict())
        set_train(model, False)
        kept, kept_acc = f"mean of epochs {epochs - averaged + 1}-{epochs}", accuracy(model, val_feats, val_labels, device)
    elif pick_best:  # an epoch's own weights: its validation accuracy was measured as it ended
        model.load_state_dict(best["state"])
        kept, kept_acc = f"epoch {best['epoch']} (best validation)", best["val_acc"]
    else:
        kept, kept_acc = f"epoch {epochs} (last)", history[-1]["val_acc"]
    print(f"[{name}] kept {kept}: val_acc {kept_acc:.4f}", flush=True)
    model.to("cpu")
    return {"val_acc": kept_acc, "kept": kept, "epochs": epochs, "clip_epochs": n * epochs,
            "wall_s": time.time() - t_start, "history": history}


def train_on_dataset(model, p, augment, name, loss_fn=cross_entropy, set_train=lambda m, on: m.train(on),
                     extra_params=(), pretrain_epochs=0, curves=True):
    """Load the train split's mel spectra and clean val features, train with dvclive curves in
    dvclive/<name>/ (curves=False: none) (params block `p`, params.yaml's `augment` block).

    pretrain_epochs > 0: first train that many epochs on the espeak-ng clips of a mixed train split
    (data.mix_synthetic_speakers) with the silence clips, then p['epochs'] on the recorded clips
    alone; each phase has its own warm-up and cosine schedule. The pre-training phase hands on its
    last epoch: recorded validation speech peaks within a few epochs of synthetic-only training
    (at epoch 2 of 40 on the ../shared folder), and restarting from there would throw the
    pre-training away."""
    power, labels, noise_power, synthetic = io.load_train()
    val_x, val_y = io.load_split("val")
    p = {**p, "augment": augment}
    phases = [(p, None, "chosen")]  # None: every clip
    if pretrain_epochs:
        real = ~synthetic
        if not synthetic.any() or not real[labels != SILENCE_INDEX].any():
            raise ValueError(f"[{name}] pretrain_epochs={pretrain_epochs} pre-trains on the espeak-ng clips "
                             "of a real source's train split: set data.mix_synthetic_speakers > 0 with "
                             "data.source folder or speech_commands (or pretrain_epochs 0)")
        phases = [({**p, "epochs": pretrain_epochs}, synthetic | (labels == SILENCE_INDEX), "last"), (p, real, "chosen")]
    results, cfg = [], io.feature_config()
    logger = Live(f"dvclive/{name}", dvcyaml=None, save_dvc_exp=False) if curves else contextlib.nullcontext()
    with logger as live:
        for phase_p, clips, keep in phases:
            subset = None if clips is None else torch.nonzero(clips).squeeze(1)
            results.append(fit(model, power, labels, noise_power, cfg, val_x, val_y, phase_p, loss_fn, live,
                               set_train, name, extra_params, keep, subset))
    result = results[-1]
    result.update(clip_epochs=sum(r["clip_epochs"] for r in results), wall_s=sum(r["wall_s"] for r in results))
    if pretrain_epochs:
        result["pretrain"] = {"last_val_acc": results[0]["history"][-1]["val_acc"],
                              **{k: results[0][k] for k in ("epochs", "clip_epochs", "wall_s")}}
    check_beats_chance(result["val_acc"], val_y, f"[{name}] training failed: validation accuracy of the kept weights",
                       f"Check the stage's lr ({p['lr']}, {p['optimizer']}) and epochs ({p['epochs']})")
    return result


def check_beats_chance(val_acc, val_labels, what, advice):
    """Refuse a model not even one validation clip better than always answering the commonest
    class (diverged, or learnt nothing), before the stage writes it for the next to build on."""
    guess = majority_share(val_labels)
    if val_acc < guess + 0.5 / len(val_labels):  # half a clip: accuracies are float32 means
        raise TrainingFailed(f"{what} {val_acc:.4f} is no better than always answering the most common class "
                             f"({guess:.4f}); nothing written. {advice}")


def validate_adopted(model, path, name):
    """Validation accuracy of a model trained elsewhere (an adopted teacher), logged as the one step
    of dvclive/<name>/ so the stage's curves exist and show what it scores on this data."""
    val_x, val_y = io.load_split("val")
    acc = accuracy(model, val_x, val_y)
    check_beats_chance(acc, val_y, f"[{name}] {path}: validation accuracy", "Expected a model trained for this task")
    with Live(f"dvclive/{name}", dvcyaml=None, save_dvc_exp=False) as live:
        live.log_metric("val_acc", acc)
        live.next_step()
    return acc
