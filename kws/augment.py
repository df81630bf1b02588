"""Training augmentation of the standard KWS recipe (time shift, background noise, SpecAugment
masks), on whole batches of mel power spectra in torch, every random draw from one seeded
generator so runs repeat exactly.

Working on mel power rather than waveforms lets training compute each clip's STFT once instead
of once per epoch (the STFT was most of a training step on 2 CPU cores). A shift by whole
10 ms frames stands for the waveform shift, and noise is added as power: |S + vN|^2 averages
to |S|^2 + v^2 |N|^2 because the cross term has random phase, the usual additive-noise model.
"""
import torch


def time_shift(power, max_frames, gen):
    """Shift each clip [B, F, T] by a uniform integer in [-max_frames, max_frames] frames;
    frames shifted in are zero power (digital silence, as a zero-filled waveform gives)."""
    if max_frames <= 0:
        return power
    b, f, t = power.shape
    shift = torch.randint(-max_frames, max_frames + 1, (b, 1), generator=gen)
    src = torch.arange(t).unsqueeze(0) - shift
    inside = ((src >= 0) & (src < t)).to(power.dtype).unsqueeze(1)
    return power.gather(2, src.clamp(0, t - 1).unsqueeze(1).expand(b, f, t)) * inside


def mix_noise(power, noise_power, prob, max_volume, gen):
    """Add a random background-noise chunk at amplitude U(0, max_volume) to a `prob` share of clips."""
    if len(noise_power) == 0 or prob <= 0:
        return power
    b = power.shape[0]
    pick = torch.randint(len(noise_power), (b,), generator=gen)
    volume = torch.rand(b, 1, 1, generator=gen) * max_volume
    use = (torch.rand(b, 1, 1, generator=gen) < prob).to(power.dtype)
    return power + use * volume ** 2 * noise_power[pick]


def spec_mask(feats, n_freq, freq_width, n_time, time_width, gen):
    """SpecAugment-style masking: zero bands of up to freq_width bins / time_width frames."""
    b, f, t = feats.shape
    keep = torch.ones(b, f, t)
    for n, width, size, axis in ((n_freq, freq_width, f, 1), (n_time, time_width, t, 2)):
        for _ in range(n):
            w = torch.randint(0, width + 1, (b, 1), generator=gen)
            start = (torch.rand(b, 1, generator=gen) * (size - w + 1)).long()
            pos = torch.arange(size).unsqueeze(0)
            band = ((pos >= start) & (pos < start + w)).float()
            keep = keep * (1 - (band.unsqueeze(1) if axis == 2 else band.unsqueeze(2)))
    return feats * keep


def augment_batch(power, noise_power, front_end, p, gen):
    """Mel power [B, n_mels, T] -> augmented normalized features. `p` is the params' augment block."""
    power = time_shift(power, round(p["time_shift_ms"] / front_end.cfg["hop_ms"]), gen)
    power = mix_noise(power, noise_power, p["noise_prob"], p["noise_volume"], gen)
    feats = front_end.finish(power)
    return spec_mask(feats, p["freq_masks"], p["freq_mask_width"], p["time_masks"], p["time_mask_width"], gen)
