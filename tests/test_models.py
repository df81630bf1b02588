import copy
import math
import numpy as np
import pytest
import torch

from kws import augment, checkpoint, features, models


def test_tc_resnet8_is_the_paper_size():
    arch, kw = models.preset("tc_resnet8", 1.0, 40, 12)
    net = models.build(arch, kw)
    assert 60_000 < models.n_params(net) < 70_000  # ~66k, ~260 KB fp32
    assert net(torch.zeros(2, 40, 101)).shape == (2, 12)
    assert models.arch_kwargs(net) == {**kw, "kernel": 9}


def test_bc_resnet_small_preset_under_10k():
    arch, kw = models.preset("bc_resnet", 1.0, 40, 12)
    net = models.build(arch, kw)
    assert models.n_params(net) < 10_000
    assert net(torch.zeros(2, 40, 101)).shape == (2, 12)


def test_unknown_preset_is_named():
    with pytest.raises(ValueError, match="resnet99"):
        models.preset("resnet99", 1.0, 40, 12)


def test_checkpoint_round_trip_and_refusals(tmp_path):
    cfg = features.make_config()
    arch, kw = models.preset("tc_resnet8", 0.5, 40, 12)
    net = models.build(arch, kw).eval()
    checkpoint.save(tmp_path / "m.pt", net, arch, kw, cfg)
    back, ckpt = checkpoint.load(tmp_path / "m.pt", cfg)
    x = torch.randn(3, 40, 101)
    torch.testing.assert_close(back(x), net(x))
    with pytest.raises(ValueError, match="feature config differs"):
        checkpoint.load(tmp_path / "m.pt", {**cfg, "n_mels": 32})
    torch.save({**ckpt, "classes": ["yes", "no"]}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="classes"):
        checkpoint.load(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="junk.pt"):
        checkpoint.load(tmp_path / "junk.pt")


def test_time_shift_moves_frames_and_zero_fills():
    gen = torch.Generator().manual_seed(0)
    power = torch.arange(1, 11, dtype=torch.float32).repeat(50, 3, 1)
    out = augment.time_shift(power, 3, gen)
    shifts = set()
    for clip in out:
        assert torch.equal(clip[0], clip[1])  # every mel bin moves together
        row = clip[0]
        nz = row[row != 0]
        shift = int(torch.nonzero(row)[0]) if row[0] == 0 else -(int(nz[0]) - 1)
        assert abs(shift) <= 3
        assert torch.equal(nz, torch.arange(1, 11, dtype=torch.float32)[max(0, -shift):10 - max(0, shift)])
        shifts.add(shift)
    assert len(shifts) > 3  # several shifts drawn


def test_shift_by_whole_frames_matches_the_shifted_waveform():
    """Away from the edges, shifting mel power by k frames equals featurizing the waveform
    shifted by k hops: the frame shift is the waveform shift, not an approximation of it."""
    cfg = features.make_config()
    front = features.FrontEnd(cfg)
    wave = torch.randn(1, 16000) * 0.1
    hop = features.hop_length(cfg)
    shifted_wave = torch.zeros_like(wave)
    shifted_wave[:, 3 * hop:] = wave[:, :-3 * hop]
    power = front.power(wave)
    expect = front.power(shifted_wave)
    got = power.gather(2, (torch.arange(power.shape[2]) - 3).clamp(0).expand_as(power))
    assert torch.allclose(got[..., 5:-2], expect[..., 5:-2], rtol=1e-3, atol=1e-6)


def test_noise_mixing_adds_scaled_noise_power():
    gen = torch.Generator().manual_seed(0)
    power, noise = torch.ones(200, 2, 4), torch.full((3, 2, 4), 5.0)
    out = augment.mix_noise(power, noise, 0.5, 0.2, gen)
    added = (out - power)[:, 0, 0]
    assert (added >= 0).all() and (added <= 5.0 * 0.2 ** 2 + 1e-6).all()
    assert 0.3 < (added > 0).float().mean() < 0.7  # about prob of the clips get noise


def test_clean_augmentation_is_the_front_end():
    """With nothing drawn, the training path equals the features the model is tested on."""
    cfg = {**features.make_config(), "mean": -3.0, "std": 2.0}
    front = features.FrontEnd(cfg)
    wave = torch.randn(4, 16000) * 0.1
    off = {"time_shift_ms": 0, "noise_prob": 0.0, "noise_volume": 0.1, "freq_masks": 0, "freq_mask_width": 5,
           "time_masks": 0, "time_mask_width": 10, "tempo": 0.0, "freq_warp": 0.0, "gain_db": 0.0}
    got = augment.augment_batch(features.mel_power(wave, cfg), torch.zeros(0, 40, 101), front, off, torch.Generator())
    assert torch.allclose(got, features.compute(wave, cfg), atol=1e-5)


def test_augmentation_repeats_with_the_seed():
    cfg = features.make_config()
    front = features.FrontEnd(cfg)
    p = {"time_shift_ms": 100, "noise_prob": 0.8, "noise_volume": 0.1, "freq_masks": 2, "freq_mask_width": 5,
         "time_masks": 2, "time_mask_width": 10, "tempo": 0.1, "freq_warp": 0.1, "gain_db": 6.0}
    power = features.mel_power(torch.randn(4, 16000) * 0.1, cfg)
    noise = features.mel_power(torch.randn(5, 16000) * 0.1, cfg)
    a = augment.augment_batch(power, noise, front, p, torch.Generator().manual_seed(1))
    b = augment.augment_batch(power, noise, front, p, torch.Generator().manual_seed(1))
    c = augment.augment_batch(power, noise, front, p, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def tone(hz, seconds=1.0, sample_rate=16000):
    return 0.3 * torch.sin(2 * math.pi * hz * torch.arange(int(seconds * sample_rate)) / sample_rate).unsqueeze(0)


def test_frequency_warp_moves_a_tone_where_the_scaled_tone_is():
    """Warping the mel power of a 1 kHz tone by 1.25 (0.8) puts its energy in the bands of a
    1.25 kHz (800 Hz) tone: the warp is a scaling in Hz, not in band index."""
    cfg = features.make_config()
    front = features.FrontEnd(cfg)
    power, one = front.power(tone(1000.0)), torch.ones(1, 1, dtype=torch.float64)
    for factor in (1.25, 0.8):
        warped = augment.stretch_and_warp(power, one, torch.tensor([[factor]], dtype=torch.float64), cfg["f_min"],
                                          cfg["f_max"])
        expect = front.power(tone(1000.0 * factor))
        assert warped[0, :, 50].argmax() == expect[0, :, 50].argmax()
        assert warped[0, :, 50].argmax() != power[0, :, 50].argmax()
    same = augment.stretch_and_warp(power, one, one, cfg["f_min"], cfg["f_max"])
    assert torch.allclose(same, power, rtol=1e-4, atol=1e-6)


def test_time_stretch_scales_distances_from_the_middle_frame():
    """A burst 30 frames after the middle lands 30 / rate frames after it; frames read from
    beyond the clip are silent, as a shifted clip's are."""
    stretch = lambda power, rates: augment.stretch_and_warp(  # noqa: E731
        power, torch.tensor(rates, dtype=torch.float64), torch.ones(len(power), 1, dtype=torch.float64), 20.0, 7600.0)
    power = torch.zeros(2, 3, 101)
    power[:, :, 80] = 1.0
    out = stretch(power, [[1.5], [0.75]])
    assert out[0, 0].argmax() == 50 + 20 and out[1, 0].argmax() == 50 + 40
    assert torch.equal(out[:, 0], out[:, 2])  # every band moves together
    ramp = torch.ones(1, 3, 101)
    assert (stretch(ramp, [[1.5]])[0, 0] == 0).sum() == 34
    assert torch.allclose(stretch(ramp, [[1.0]]), ramp)


def test_random_gain_scales_each_clip_within_its_range():
    power = torch.ones(400, 3, 5)
    out = augment.random_gain(power, 10.0, torch.Generator().manual_seed(0))
    db = 10 * torch.log10(out[:, 0, 0])
    assert (db.abs() <= 10 + 1e-4).all() and db.min() < -8 and db.max() > 8
    assert torch.allclose(out, out[:, :1, :1].expand_as(out))  # one gain for the whole clip
    assert torch.equal(augment.random_gain(power, 0.0, torch.Generator()), power)


def test_spec_mask_zeroes_bands_within_width():
    feats = torch.ones(8, 40, 101)
    out = augment.spec_mask(feats, 1, 5, 0, 0, torch.Generator().manual_seed(0))
    zero_rows = (out == 0).all(dim=2).sum(dim=1)
    assert zero_rows.max() <= 5 and zero_rows.sum() > 0
    assert not (out == 0).all(dim=1).any()  # no time mask asked for


def zeroed_bands(feats):
    """(zeroed mel bins, zeroed frames) per clip of a [B, F, T] batch."""
    zero = feats == 0
    return zero.all(dim=2).sum(dim=1), zero.all(dim=1).sum(dim=1)


@pytest.mark.parametrize("masks", [(0, 2), (2, 0)])  # (frequency, time)
def test_augmentation_masks_the_axes_it_is_asked_to(masks):
    """Through augment_batch, as training calls it: time masks zero whole frames (up to 2 x 10
    of them), frequency masks whole mel bins (up to 2 x 5), and neither touches the other axis."""
    cfg = {**features.make_config(), "mean": -3.0, "std": 2.0}
    p = {"time_shift_ms": 0, "noise_prob": 0.0, "noise_volume": 0.0, "freq_masks": masks[0], "freq_mask_width": 5,
         "time_masks": masks[1], "time_mask_width": 10, "tempo": 0.0, "freq_warp": 0.0, "gain_db": 0.0}
    power = features.mel_power(torch.randn(16, 16000) * 0.1, cfg)
    bins, frames = zeroed_bands(augment.augment_batch(power, torch.zeros(0, 40, 101), features.FrontEnd(cfg), p,
                                                      torch.Generator().manual_seed(0)))
    for zeroed, n, width in ((bins, masks[0], 5), (frames, masks[1], 10)):
        if n:
            assert zeroed.max() <= n * width and (zeroed > 0).float().mean() > 0.5
        else:
            assert not zeroed.any()


def test_adopting_a_received_teacher_checks_it(tmp_path):
    cfg = features.make_config()
    arch, kw = models.preset("tc_resnet8", 0.5, 40, 12)
    checkpoint.save(tmp_path / "ok.pt", models.build(arch, kw), arch, kw, cfg)
    model, ckpt = checkpoint.adopt(tmp_path / "ok.pt", cfg)
    assert ckpt["arch"] == "tc_resnet"
    with pytest.raises(ValueError, match="feature config differs"):
        checkpoint.adopt(tmp_path / "ok.pt", {**cfg, "hop_ms": 20.0})
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        checkpoint.adopt(tmp_path / "missing.pt", cfg)
    diverged = models.build(arch, kw)
    with torch.no_grad():
        diverged.stem.weight[0, 0, 0] = float("nan")
    checkpoint.save(tmp_path / "nan.pt", diverged, arch, kw, cfg)
    with pytest.raises(ValueError, match=r"nan.pt: weights are not finite \(NaN/inf in \['stem.weight'\]"):
        checkpoint.adopt(tmp_path / "nan.pt", cfg)


def test_unknown_data_source_is_named():
    from kws import data_source
    with pytest.raises(ValueError, match="data.source must be one of"):
        data_source.corpus_root({"source": "youtube"})
    with pytest.raises(ValueError, match="data.root"):
        data_source.corpus_root({"source": "folder", "root": ""})


def test_training_repeats_exactly_with_the_seed():
    from kws import train
    cfg = features.make_config()
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 3000, (64, 16000)).astype(np.int16)
    labels = rng.integers(0, 12, 64)
    noise = rng.normal(0, 1000, (8, 16000)).astype(np.int16)
    val_x, val_y = features.compute(wave[:16], cfg), torch.as_tensor(labels[:16])
    p = {"epochs": 1, "batch_size": 32, "optimizer": "sgd", "momentum": 0.9, "lr": 0.1, "warmup_epochs": 1,
         "weight_decay": 1e-3, "seed": 3, "device": "cpu", "average_share": 0,
         "augment": {"time_shift_ms": 100, "noise_prob": 0.8, "noise_volume": 0.1, "freq_masks": 2,
                     "freq_mask_width": 5, "time_masks": 2, "time_mask_width": 10, "tempo": 0.1,
                     "freq_warp": 0.1, "gain_db": 6.0}}
    states = []
    for _ in range(2):
        net = models.build(*models.preset("tc_resnet8", 0.5, 40, 12), seed=3)
        train.fit(net, features.mel_power(wave, cfg), torch.as_tensor(labels), features.mel_power(noise, cfg), cfg,
                  val_x, val_y, p, name="repeat")
        states.append(net.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    other = models.build(*models.preset("tc_resnet8", 0.5, 40, 12), seed=4)
    assert not torch.equal(other.stem.weight, models.build(*models.preset("tc_resnet8", 0.5, 40, 12), seed=3).stem.weight)


def test_weight_averaging_keeps_the_mean_of_the_last_epochs_with_fresh_batchnorm_statistics():
    """average_share 0.5 of 4 epochs: the kept weights are the mean of epochs 3 and 4 (recorded as
    each epoch ends, when the loop switches the model to eval), and BatchNorm's running statistics
    are re-estimated for them rather than left at the last epoch's."""
    from kws import train
    cfg = features.make_config()
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 3000, (48, 16000)).astype(np.int16)
    labels = torch.as_tensor(rng.integers(0, 12, 48))
    p = {"epochs": 4, "batch_size": 16, "optimizer": "sgd", "momentum": 0.9, "lr": 0.1, "warmup_epochs": 0,
         "weight_decay": 0.0, "seed": 0, "device": "cpu", "average_share": 0.5,
         "augment": {"time_shift_ms": 0, "noise_prob": 0.0, "noise_volume": 0.0, "freq_masks": 0,
                     "freq_mask_width": 0, "time_masks": 0, "time_mask_width": 0, "tempo": 0.0,
                     "freq_warp": 0.0, "gain_db": 0.0}}
    ends = []

    def set_train(m, on):
        m.train(on)
        if not on:
            ends.append(copy.deepcopy(m.state_dict()))

    net = models.build(*models.preset("tc_resnet8", 0.25, 40, 12))
    result = train.fit(net, features.mel_power(wave, cfg), labels, features.mel_power(wave[:4], cfg), cfg,
                       features.compute(wave[:8], cfg), labels[:8], p, set_train=set_train, name="avg")
    kept, third, last = net.state_dict(), ends[2], ends[3]
    for name, _ in net.named_parameters():
        assert torch.allclose(kept[name], (third[name] + last[name]) / 2, atol=1e-6), name
    bn = [k for k in kept if k.endswith("running_mean")]
    assert bn and not all(torch.equal(kept[k], last[k]) for k in bn)
    assert result["kept"] == "mean of epochs 3-4"
    assert result["val_acc"] == pytest.approx(train.accuracy(net, features.compute(wave[:8], cfg), labels[:8]))


def test_learning_rate_warms_up_linearly_then_decays_to_zero():
    from kws import train
    opt = train.make_optimizer([torch.nn.Parameter(torch.zeros(1))],
                               {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0})
    sched = train.warmup_cosine(opt, total_steps=100, warmup_steps=10)
    lrs = []
    for _ in range(100):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01) and lrs[9] == pytest.approx(0.1)  # linear warm-up to the base lr
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))  # then never rises
    assert lrs[55] == pytest.approx(0.05, rel=0.05) and lrs[-1] < 1e-3  # cosine: half way at the middle, ~0 at the end


def test_unknown_optimizer_is_refused_by_name():
    from kws import train
    with pytest.raises(ValueError, match="optimizer must be sgd or adamw"):
        train.make_optimizer([torch.nn.Parameter(torch.zeros(1))], {"optimizer": "adam", "lr": 0.1, "weight_decay": 0})


def test_a_diverged_training_run_stops_with_a_clear_error():
    from kws import train
    cfg = features.make_config()
    rng = np.random.default_rng(0)
    wave = rng.normal(0, 3000, (32, 16000)).astype(np.int16)
    labels = torch.as_tensor(rng.integers(0, 12, 32))
    p = {"epochs": 2, "batch_size": 16, "optimizer": "sgd", "momentum": 0.9, "lr": 1e30, "warmup_epochs": 0,
         "weight_decay": 0.0, "seed": 0, "device": "cpu", "average_share": 0,
         "augment": {"time_shift_ms": 0, "noise_prob": 0.0, "noise_volume": 0.0, "freq_masks": 0,
                     "freq_mask_width": 0, "time_masks": 0, "time_mask_width": 0, "tempo": 0.0,
                     "freq_warp": 0.0, "gain_db": 0.0}}
    net = models.build(*models.preset("tc_resnet8", 0.25, 40, 12))
    with pytest.raises(FloatingPointError, match=r"\[teacher\] training diverged: loss .* lower the stage's lr"):
        train.fit(net, features.mel_power(wave, cfg), labels, features.mel_power(wave[:4], cfg), cfg,
                  features.compute(wave[:8], cfg), labels[:8], p, name="teacher")


def test_export_refuses_a_model_with_nan_weights(tmp_path):
    from kws import export
    net = models.build(*models.preset("tc_resnet8", 0.25, 40, 12)).eval()
    with torch.no_grad():
        net.fc.weight[0, 0] = float("nan")
    with pytest.raises(RuntimeError, match="not finite"):
        export.to_onnx(net, torch.randn(2, 40, 101), tmp_path / "nan.onnx")
