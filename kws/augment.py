"""Training augmentation of the standard KWS recipe (time shift, background noise, SpecAugment
masks) and three speaker perturbations (speaking rate, vocal-tract length, level), on whole
batches of mel power spectra in torch, every random draw from one seeded generator so runs
repeat exactly.

Working on mel power rather than waveforms lets training compute each clip's STFT once instead
of once per epoch (the STFT was most of a training step on 2 CPU cores). A shift by whole
10 ms frames stands for the waveform shift, and noise is added as power: |S + vN|^2 averages
to |S|^2 + v^2 |N|^2 because the cross term has random phase, the usual additive-noise model.
Rate, warp and gain change the speech alone, before the noise (which keeps its own pace, pitch
and level): a small real folder holds a few hundred speakers, and these stand in for the
speaking rates, vocal tracts and microphone distances it lacks.
"""
import torch
import torch.nn.functional as F

from kws.features import hz_to_mel, mel_edges

SPEAKER_PERTURBATIONS = ("tempo", "freq_warp", "gain_db")  # augment keys beyond the standard recipe's


def uniform_factors(b, spread, gen):
    """b factors drawn from U(1 - spread, 1 + spread), [b, 1] (spread 0: all 1, nothing drawn)."""
    if spread <= 0:
        return torch.ones(b, 1, dtype=torch.float64)
    return 1 + (2 * torch.rand(b, 1, generator=gen, dtype=torch.float64) - 1) * spread


def stretch_and_warp(power, rates, factors, f_min, f_max):
    """Each clip of mel power [B, F, T] (HTK bands from f_min to f_max Hz) spoken faster by
    rates [B, 1] (> 1: faster) and its spectrum scaled in Hz by factors [B, 1], in one bilinear
    resampling (grid_sample; `make bench` prints its cost beside the model step's).
    Output frame t reads input frame mid + (t - mid) * rate, and frames read from beyond the clip
    are silent, as a shifted clip's are. Content at f moves to factor * f, so band k (centre c_k)
    reads the bands at c_k / factor; the edge bands repeat rather than go silent (log(0) there
    would be a stronger cue than the warp)."""
    b, f, t = power.shape
    mid = (t - 1) / 2
    frame = mid + (torch.arange(t, dtype=torch.float64) - mid) * rates  # [B, T]
    lo, hi = hz_to_mel(f_min), hz_to_mel(f_max)
    step = (hi - lo) / (f + 1)  # mel between band centres
    centres = mel_edges(f_min, f_max, f)[1:-1]
    band = (hz_to_mel(centres / factors) - lo) / step - 1  # [B, F]
    grid = torch.stack(((2 * frame / (t - 1) - 1).float()[:, None, :].expand(b, f, t),
                        (2 * band / (f - 1) - 1).float()[:, :, None].expand(b, f, t)), dim=-1)
    out = F.grid_sample(power.unsqueeze(1), grid, mode="bilinear", padding_mode="border", align_corners=True)
    inside = ((frame > -0.5) & (frame < t - 0.5)).to(power.dtype)  # a frame nearest no input frame is silent
    return out.squeeze(1) * inside[:, None, :]


def random_gain(power, max_db, gen):
    """Each clip's level x a gain U(-max_db, +max_db) dB (power x 10^(dB/10); 0: off): recorded
    speakers sit near or far from the microphone, and a quiet word must not read as silence."""
    if max_db <= 0:
        return power
    db = (2 * torch.rand(len(power), 1, 1, generator=gen) - 1) * max_db
    return power * 10 ** (db / 10)


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
    """SpecAugment-style masking: zero bands of up to freq_width bins / time_width frames. The
    masks are kept per axis ([B, F] and [B, T]) and meet the batch once, not as a [B, F, T] mask
    per band."""
    b, f, t = feats.shape
    keep = {1: torch.ones(b, f), 2: torch.ones(b, t)}
    for n, width, size, axis in ((n_freq, freq_width, f, 1), (n_time, time_width, t, 2)):
        for _ in range(n):
            w = torch.randint(0, width + 1, (b, 1), generator=gen)
            start = (torch.rand(b, 1, generator=gen) * (size - w + 1)).long()
            pos = torch.arange(size).unsqueeze(0)
            keep[axis] = keep[axis] * ~((pos >= start) & (pos < start + w))
    return feats * keep[1].unsqueeze(2) * keep[2].unsqueeze(1)


def augment_batch(power, noise_power, front_end, p, gen):
    """Mel power [B, n_mels, T] -> augmented normalized features. `p` is the params' augment block."""
    if p["tempo"] > 0 or p["freq_warp"] > 0:
        rates, factors = uniform_factors(len(power), p["tempo"], gen), uniform_factors(len(power), p["freq_warp"], gen)
        power = stretch_and_warp(power, rates, factors, front_end.cfg["f_min"], front_end.cfg["f_max"])
    power = random_gain(power, p["gain_db"], gen)
    power = time_shift(power, round(p["time_shift_ms"] / front_end.cfg["hop_ms"]), gen)
    power = mix_noise(power, noise_power, p["noise_prob"], p["noise_volume"], gen)
    feats = front_end.finish(power)
    return spec_mask(feats, p["freq_masks"], p["freq_mask_width"], p["time_masks"], p["time_mask_width"], gen)
