"""Training augmentation of the standard KWS recipe, on whole batches in torch (no per-clip
Python), every random draw from one seeded generator so runs repeat exactly."""
import torch


def time_shift(wave, max_shift, gen):
    """Shift each clip by a uniform integer in [-max_shift, max_shift] samples, zero-filled.
    A slice copy per clip: several times faster than one big gather with a [B, S] index."""
    if max_shift <= 0:
        return wave
    b, n = wave.shape
    out = torch.zeros_like(wave)
    for i, s in enumerate(torch.randint(-max_shift, max_shift + 1, (b,), generator=gen).tolist()):
        if s >= 0:
            out[i, s:] = wave[i, :n - s]
        else:
            out[i, :n + s] = wave[i, -s:]
    return out


def mix_noise(wave, noise, prob, max_volume, gen):
    """Add a random background-noise chunk at volume U(0, max_volume) to a `prob` share of clips."""
    if len(noise) == 0 or prob <= 0:
        return wave
    b = wave.shape[0]
    pick = torch.randint(len(noise), (b,), generator=gen)
    volume = torch.rand(b, 1, generator=gen) * max_volume
    use = (torch.rand(b, 1, generator=gen) < prob).float()
    return torch.clamp(wave + use * volume * noise[pick], -1.0, 1.0)


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


def augment_batch(wave, noise, front_end, p, gen):
    """float waveforms [B, S] -> augmented normalized features. `p` is the params' augment block."""
    wave = time_shift(wave, int(p["time_shift_ms"] * front_end.cfg["sample_rate"] / 1000), gen)
    wave = mix_noise(wave, noise, p["noise_prob"], p["noise_volume"], gen)
    feats = front_end(wave)
    return spec_mask(feats, p["freq_masks"], p["freq_mask_width"], p["time_masks"], p["time_mask_width"], gen)
