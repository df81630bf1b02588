"""Knowledge distillation losses (Hinton et al. 2015; FitNet hints, Romero et al. 2015) and the
teacher set-ups the distil stage chooses between."""
import torch
import torch.nn as nn
import torch.nn.functional as F


def kd_loss(student_logits, teacher_logits, labels, alpha, temperature):
    """(1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T). T^2 keeps the soft
    term's gradient scale independent of T. labels: class indices, or class probabilities (mixup)."""
    hard = F.cross_entropy(student_logits, labels)
    if alpha == 0:
        return hard
    t = temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, 1), F.softmax(teacher_logits / t, 1), reduction="batchmean")
    return (1 - alpha) * hard + alpha * t * t * soft


def as_sequence(feats):
    """[B, C, T] for both families: a 2-D map [B, C, F, T] is averaged over frequency."""
    return feats.mean(dim=2) if feats.dim() == 4 else feats


class FeatureAdapter(nn.Module):
    """Learned 1x1 conv from the student's last feature map to the teacher's (FitNet hint),
    with the time axis pooled to the teacher's length."""

    def __init__(self, c_student, c_teacher):
        super().__init__()
        self.proj = nn.Conv1d(c_student, c_teacher, 1)

    def forward(self, student_feats, teacher_len):
        return self.proj(F.adaptive_avg_pool1d(as_sequence(student_feats), teacher_len))


def feature_channels(model: nn.Module, n_mels: int, n_frames: int) -> int:
    """Channels of `model`'s last feature map on clips of n_mels x n_frames, probed on the model's
    own device (the distil stage asks after moving the teachers to the training device)."""
    probe = torch.zeros(1, n_mels, n_frames, device=next(model.parameters()).device)
    with torch.no_grad():
        return as_sequence(model.features(probe)).shape[1]


def ensemble_logits(teachers, x, temperature):
    """Teachers' averaged soft targets, returned as logits at temperature 1 so kd_loss can
    re-apply T: log of the mean of softmax(z/T), times T."""
    probs = torch.stack([F.softmax(t(x) / temperature, 1) for t in teachers]).mean(0)
    return torch.log(probs.clamp_min(1e-8)) * temperature


def mixup_batch(x, y, strength):
    """mixup (Zhang et al. 2018): the batch blended with a shuffle of itself by one
    lam ~ Beta(strength, strength). Returns the blend and `targets(logits)`: the labels blended
    alike as class probabilities (cross-entropy on them is lam * CE(y) + (1 - lam) *
    CE(y shuffled)). Draws from torch's global generator, which the training loop seeds."""
    lam = torch.distributions.Beta(strength, strength).sample().item()
    perm = torch.randperm(len(x), device=x.device)

    def targets(logits):
        onehot = F.one_hot(y, logits.shape[1]).float()
        return lam * onehot + (1 - lam) * onehot[perm]
    return lam * x + (1 - lam) * x[perm], targets


def make_loss(teachers, alpha, temperature, mixup=0.0, feature_weight=0.0, adapter=None):
    """loss(model, x, y) = (1 - alpha) * CE + alpha * T^2 * KL to the teachers' softened outputs
    (labels only at alpha 0 or with no teachers), plus feature_weight times a hint loss through
    `adapter`. mixup > 0: the student and its teachers both see the blended clips, so the soft
    targets cover the space between training clips, not only the clips themselves."""
    for t in teachers:
        t.eval()
        t.requires_grad_(False)

    def loss(model, x, y):
        def targets(logits):  # class indices, unless mixup blends them
            return y
        if mixup > 0:
            x, targets = mixup_batch(x, y, mixup)
        if alpha == 0 or not teachers:
            logits = model(x)
            return F.cross_entropy(logits, targets(logits))
        with torch.no_grad():
            t_logits = teachers[0](x) if len(teachers) == 1 else ensemble_logits(teachers, x, temperature)
        if adapter is None:
            logits = model(x)
            return kd_loss(logits, t_logits, targets(logits), alpha, temperature)
        s_feats = model.features(x)
        s_logits = model.head(s_feats)
        with torch.no_grad():  # hints come from the last teacher: the narrowest, closest to the student
            t_feats = as_sequence(teachers[-1].features(x))
        hint = F.mse_loss(adapter(s_feats, t_feats.shape[-1]), t_feats)
        return kd_loss(s_logits, t_logits, targets(s_logits), alpha, temperature) + feature_weight * hint
    return loss
