"""Training augmentation of the standard KWS recipe (time shift, background noise, SpecAugment
masks) and two speaker perturbations (tempo and vocal-tract-length warps), on whole batches of mel power spectra in torch, every random draw from one seeded
generator so runs repeat exactly.

Working on mel power rather than waveforms lets training compute each clip's STFT once instead
of once per epoch (the STFT was most of a training step on 2 CPU cores). A shift by whole
10 ms frames stands for the waveform shift, and noise is added as power: |S + vN|^2 averages
to |S|^2 + v^2 |N|^2 because the cross term has random phase, the usual additive-noise model.
Tempo and frequency warps resample the speech's own spectrum (before noise is added, which
keeps its own pitch and pace): a small real folder holds a few hundred speakers, and these
stand in for the speaking rates and vocal tracts it lacks.
"""
import torch

from kws.features import hz_to_mel, mel_to_hz


def resample(power, pos, axis):
    """power [B, F, T] read at fractional positions pos [B, F] (axis 1) or [B, T] (axis 2) along
    that axis, linearly interpolated; positions nearer no element of the axis read zero power."""
    size = power.shape[axis]
    inside = ((pos > -0.5) & (pos < size - 0.5)).to(power.dtype)
    pos = pos.clamp(0, size - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=size - 1)
    frac, inside = (pos - lo).unsqueeze(axis % 2 + 1), inside.unsqueeze(axis % 2 + 1)
    expand = lambda i: i.unsqueeze(axis % 2 + 1).expand_as(power)  # noqa: E731
    lo_v, hi_v = power.gather(axis, expand(lo)), power.gather(axis, expand(hi))
    return (lo_v + frac * (hi_v - lo_v)) * inside


def uniform_factors(b, spread, gen):
    """b factors drawn from U(1 - spread, 1 + spread), [b, 1]."""
    return 1 + (2 * torch.rand(b, 1, generator=gen, dtype=torch.float64) - 1) * spread


def stretch_frames(power, rates):
    """Speak each clip [B, F, T] faster (rate > 1) or slower by rates [B, 1] about its middle
    frame: output frame t reads input frame mid + (t - mid) * rate."""
    t = power.shape[2]
    mid = (t - 1) / 2
    return resample(power, (mid + (torch.arange(t, dtype=torch.float64) - mid) * rates).to(power.dtype), axis=2)


def warp_bands(power, factors, f_min, f_max):
    """Scale each clip's spectrum (mel power [B, F, T], HTK bands from f_min to f_max Hz) in Hz by
    factors [B, 1]: content at f moves to factor * f, so mel band k (centre c_k) reads the bands at
    c_k / factor, interpolated on the mel axis."""
    f = power.shape[1]
    lo, hi = hz_to_mel(f_min), hz_to_mel(f_max)
    step = (hi - lo) / (f + 1)
    centres = torch.tensor([mel_to_hz(lo + step * (k + 1)) for k in range(f)], dtype=torch.float64)
    source_mel = 2595.0 * torch.log10(1.0 + centres / factors / 700.0)
    # edge bands repeat rather than go silent: log(0) there would be a stronger cue than the warp
    return resample(power, ((source_mel - lo) / step - 1).clamp(0, f - 1).to(power.dtype), axis=1)


def random_gain(power, max_db, gen):
    """Each clip's level x a gain U(-max_db, +max_db) dB (power x 10^(dB/10); 0: off): recorded
    speakers sit near or far from the microphone, and a quiet word must not read as silence."""
    if max_db <= 0:
        return power
    db = (2 * torch.rand(len(power), 1, 1, generator=gen) - 1) * max_db
    return power * 10 ** (db / 10)


def time_stretch(power, max_rate, gen):
    """Speaking rate x U(1 - max_rate, 1 + max_rate) per clip (0: off)."""
    return stretch_frames(power, uniform_factors(len(power), max_rate, gen)) if max_rate > 0 else power


def freq_warp(power, max_warp, f_min, f_max, gen):
    """Vocal tract length perturbation: each clip's spectrum scaled in Hz by
    U(1 - max_warp, 1 + max_warp) (0: off)."""
    return warp_bands(power, uniform_factors(len(power), max_warp, gen), f_min, f_max) if max_warp > 0 else power


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
    power = time_stretch(power, p["tempo"], gen)
    power = freq_warp(power, p["freq_warp"], front_end.cfg["f_min"], front_end.cfg["f_max"], gen)
    power = random_gain(power, p["gain_db"], gen)
    power = time_shift(power, round(p["time_shift_ms"] / front_end.cfg["hop_ms"]), gen)
    power = mix_noise(power, noise_power, p["noise_prob"], p["noise_volume"], gen)
    feats = front_end.finish(power)
    return spec_mask(feats, p["freq_masks"], p["freq_mask_width"], p["time_masks"], p["time_mask_width"], gen)
