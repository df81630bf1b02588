"""Benchmark: teacher training throughput (clips/s) on this machine, with and without the
on-the-fly augmentation, so data preparation's share of a step is visible; and the one-off
cost of each clip's mel power spectrum, computed once by the features stage. For a 2-D model
(bc_resnet) it also times the model step with the model in NCHW memory instead of its
channels-last default, the two steps alternating so a shared machine's load hits both alike.

    OMP_NUM_THREADS=1 python bench/train_throughput.py [--model tc_resnet8] [--width 1.0] [--batch 128] [--steps 30]
"""
import copy
import argparse
import time

import torch
import torch.nn.functional as F

from kws import augment, features, io, models, train


def clips_per_s(step, batch, steps):
    step()  # warm-up
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t)


def alternating_clips_per_s(steps, batch, n, clock=time.perf_counter):
    """Best-of-n clips/s of each step function, run in turn (A, B, A, B, ...) after a warm-up.
    clock=time.process_time: clips per CPU-second, which other jobs on the machine disturb less."""
    best = [float("inf")] * len(steps)
    for rep in range(n + 1):
        for i, step in enumerate(steps):
            t = clock()
            step()
            if rep:
                best[i] = min(best[i], clock() - t)
    return [batch / b for b in best]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="tc_resnet8")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    a = ap.parse_args()
    cfg = features.make_config()
    aug = io.params("augment")  # the augmentation the pipeline trains with
    front = features.FrontEnd(cfg)
    net = models.build(*models.preset(a.model, a.width, 40, 12))
    opt = train.make_optimizer(net.parameters(), io.params("teacher"))
    gen = torch.Generator().manual_seed(0)
    wave = torch.randn(a.batch, 16000) * 0.1
    power = features.mel_power(wave, cfg)
    noise = features.mel_power(torch.randn(64, 16000) * 0.05, cfg)
    labels = torch.randint(0, 12, (a.batch,))
    feats = front(wave)

    def model_step(x=feats, net=net, opt=opt):
        loss = F.cross_entropy(net(x), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()

    def data_step():
        with torch.no_grad():
            return augment.augment_batch(power, noise, front, aug, gen)

    model_only = clips_per_s(model_step, a.batch, a.steps)
    data_only = clips_per_s(data_step, a.batch, a.steps)
    full = clips_per_s(lambda: model_step(data_step()), a.batch, a.steps)
    spectra = clips_per_s(lambda: features.mel_power(wave, cfg), a.batch, a.steps)
    print(f"{a.model} x{a.width} ({models.n_params(net)} params), batch {a.batch}, torch threads {torch.get_num_threads()}")
    print(f"  model step only      {model_only:8.0f} clips/s")
    print(f"  augment+features     {data_only:8.0f} clips/s")
    print(f"  full training step   {full:8.0f} clips/s  (data share {full / data_only:.0%} of step time)")
    print(f"  mel spectra (once)   {spectra:8.0f} clips/s  (STFT + mel, once per clip, in the features stage)")
    plain_aug = {**aug, **dict.fromkeys(augment.SPEAKER_PERTURBATIONS, 0.0)}
    per_clip = [1e6 / r for r in alternating_clips_per_s(
        [data_step, lambda: augment.augment_batch(power, noise, front, plain_aug, gen), model_step],
        a.batch, a.steps, clock=time.process_time)]
    print(f"  CPU-us per clip: augment+features {per_clip[0]:.1f}, {per_clip[1]:.1f} without "
          f"{', '.join(augment.SPEAKER_PERTURBATIONS)}; model step {per_clip[2]:.1f} (alternating, best of {a.steps})")
    if a.model == "bc_resnet":  # built channels-last (kws.models.BCResNet): fresh twins, one in NCHW memory
        cl_net = models.build(*models.preset(a.model, a.width, 40, 12))
        nchw = copy.deepcopy(cl_net).to(memory_format=torch.contiguous_format)
        steps = [lambda m=m, o=train.make_optimizer(m.parameters(), io.params("teacher")): model_step(net=m, opt=o)
                 for m in (cl_net, nchw)]
        cl, plain = alternating_clips_per_s(steps, a.batch, a.steps)
        print(f"  model step, channels-last {cl:8.0f} clips/s vs NCHW {plain:8.0f} clips/s "
              f"(x{cl / plain:.2f}, alternating, best of {a.steps})")

if __name__ == "__main__":
    main()
