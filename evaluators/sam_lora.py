"""SAM LoRA ranks: a one-epoch proxy fine-tune for box-prompted segmentation (Kvasir-SEG, ISIC ...).

Space ``sam_lora``: 32 slots ``rank_00`` .. ``rank_31``, each a LoRA rank in {3, 6, 12, 24}.

**Module groups.** The LoRA targets are the four linear layers of every image-encoder layer,
in layer order: ``vision_encoder.layers.{i}.attn.qkv``, ``.attn.proj``, ``.mlp.lin1``,
``.mlp.lin2``. These 4L modules are cut into 32 contiguous groups of near-equal size (module j
goes to slot floor(32 j / 4L)), and every module of slot g's group gets rank r_g with
``lora_alpha = r_g`` (peft ``rank_pattern``/``alpha_pattern``):

- the embedded tiny SAM (8 layers): 32 modules, one per slot (slot 4i + k = module k of layer i);
- SAM ViT-B (12 layers): 48 modules, groups of 1-2 (slots alternate 2, 1, 2, 1 ... modules);
- SAM ViT-L (24 layers): 96 modules, 3 per slot;
- SAM ViT-H (32 layers): 128 modules, one layer (all four modules) per slot.

An encoder with fewer than 8 layers is refused.

**Proxy.** Per evaluation: a fresh deep copy of the model gets the NCode's LoRA (same seed for
every code); the LoRA weights and the whole mask decoder are trained (the prompt encoder stays
frozen) for one epoch over the training images (``--steps`` caps the number of batches) with
BCE + Dice loss; the prompt is the box around the ground-truth mask (the whole image when the
mask is empty), images are resized to the encoder's input size on their longest side and padded
(as SAM's processor does), and the single-mask output is compared at the input resolution. Then
the validation images are predicted and scored at their original resolution with pysodmetrics.
Score ``seg_score = 0.25 S_alpha + 0.25 mean E_phi + 0.25 weighted F_beta + 0.125 IoU + 0.125 Dice``
(IoU and Dice of the mask thresholded at 0.5, averaged over images); each term is also recorded.

**Inputs.** ``--model-path``: a transformers SamModel folder (e.g. a download of
facebook/sam-vit-base; ``preprocessor_config.json`` gives the pixel mean/std when present).
``--data``: a dataset folder with ``images/`` and ``masks/`` holding files of the same stems
(the Kvasir-SEG / ISIC layout); with ``train/`` and ``val/`` (or ``test/``) subfolders of that
layout their split is used, otherwise a seeded 80/20 split of the one folder.

**Default (no flags).** A tiny SamModel with random weights built from small configs (64x64
input, 8 encoder layers) and 16 synthetic 64x64 images, each with one filled ellipse and its
mask, written to a temporary folder and read back through the same loader. Scores only prove
that the pipeline works.
"""

from __future__ import annotations

import copy
import json
import random
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console

from evaluators.lora_common import (
    Deadline,
    autocast,
    check_budget,
    check_finite,
    failures_as_errors,
    grad_scaler,
    grouped_lora_config,
    lora_parameter_count,
    seed_everything,
    split_evenly,
    tiny_cpu_threads,
    torch_threads,
    training_device,
)
from tools.evaluator import Evaluator, EvaluatorSetupError, Metric, Outcome
from tools.ncode import decode
from tools.reporting import Reporter
from tools.spaces import sam_lora_space

GROUPS = 32
LAYER_MODULES = ("attn.qkv", "attn.proj", "mlp.lin1", "mlp.lin2")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
SAM_MEAN, SAM_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
WEIGHTS = {"s_alpha": 0.25, "e_phi": 0.25, "wf_beta": 0.25, "iou": 0.125, "dice": 0.125}
CACHE_BYTES = 512 * 2**20  # prepared training images kept in memory up to this size, else read per evaluation


@dataclass(frozen=True)
class ProxySettings:
    batch_size: int
    lr: float
    max_batches: int | None  # None: one epoch


TINY_PROXY = ProxySettings(batch_size=4, lr=3e-3, max_batches=None)
REAL_PROXY = ProxySettings(batch_size=2, lr=1e-4, max_batches=None)


def sam_lora_groups(model: torch.nn.Module, groups: int = GROUPS) -> list[list[str]]:
    """The module names of each of the ``groups`` slots (see the module docstring)."""
    layers = len(model.vision_encoder.layers)
    names = [f"vision_encoder.layers.{i}.{module}" for i in range(layers) for module in LAYER_MODULES]
    present = dict(model.named_modules())
    names = [name for name in names if isinstance(present.get(name), torch.nn.Linear)]
    if len(names) < groups:
        raise EvaluatorSetupError(
            f"the SAM image encoder has {len(names)} LoRA-able linear modules, fewer than the {groups} slots of "
            "sam_lora (needs at least 8 encoder layers)"
        )
    return split_evenly(names, groups)


def tiny_sam():
    from transformers import SamConfig, SamModel

    config = SamConfig(
        vision_config={
            "hidden_size": 32, "output_channels": 32, "num_hidden_layers": 8, "num_attention_heads": 2,
            "image_size": 64, "patch_size": 8, "window_size": 4, "global_attn_indexes": [1, 3, 5, 7],
            "num_pos_feats": 16, "mlp_dim": 64,
            "initializer_range": 0.02,  # SamVisionConfig's default 1e-10 leaves a random encoder all but zero
        },
        prompt_encoder_config={"hidden_size": 32, "image_size": 64, "patch_size": 8, "mask_input_channels": 4},
        mask_decoder_config={
            "hidden_size": 32, "mlp_dim": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
            "iou_head_hidden_dim": 32,
        },
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return SamModel(config)


def write_tiny_dataset(folder: Path, count: int = 16, size: int = 64, seed: int = 0) -> Path:
    """``count`` images of ``size`` x ``size``: a noisy two-colour gradient with one filled, rotated
    ellipse; ``masks/`` holds the ellipse. Returns ``folder``."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    for number in range(count):
        top, bottom = rng.uniform(0, 255, size=(2, 3))
        image = top + (bottom - top) * (ys / size)[..., None] + rng.normal(0, 12, size=(size, size, 3))
        cx, cy = rng.uniform(size * 0.3, size * 0.7, size=2)
        a, b = rng.uniform(size * 0.12, size * 0.3, size=2)
        angle = rng.uniform(0, np.pi)
        u = (xs - cx) * np.cos(angle) + (ys - cy) * np.sin(angle)
        v = -(xs - cx) * np.sin(angle) + (ys - cy) * np.cos(angle)
        mask = (u / a) ** 2 + (v / b) ** 2 <= 1
        image[mask] = rng.uniform(0, 255, size=3) + rng.normal(0, 8, size=(int(mask.sum()), 3))
        Image.fromarray(image.clip(0, 255).astype(np.uint8)).save(folder / "images" / f"{number:03d}.png")
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "masks" / f"{number:03d}.png")
    return folder


def find_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """Image/mask pairs of a folder with ``images/`` and ``masks/`` of the same file stems."""
    missing = [name for name in ("images", "masks") if not (folder / name).is_dir()]
    if missing:
        raise EvaluatorSetupError(
            f"dataset folder {folder} has no {' or '.join(m + '/' for m in missing)} subfolder; expected images/ "
            "and masks/ with files of the same stems (Kvasir-SEG / ISIC layout)"
        )

    def by_stem(sub: str) -> dict[str, Path]:
        return {p.stem: p for p in sorted((folder / sub).iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}

    images, masks = by_stem("images"), by_stem("masks")
    if not images:
        raise EvaluatorSetupError(f"dataset folder {folder / 'images'} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    unmatched = sorted(set(images) - set(masks))
    if unmatched:
        raise EvaluatorSetupError(
            f"dataset folder {folder}: {len(unmatched)} image(s) without a mask of the same stem in masks/ "
            f"(first: {images[unmatched[0]].name})"
        )
    return [(images[stem], masks[stem]) for stem in sorted(images)]


def load_splits(folder: Path, seed: int) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    if not folder.is_dir():
        raise EvaluatorSetupError(
            f"dataset folder {folder} does not exist; pass --data PATH, a folder with images/ and masks/"
        )
    val_dir = next((folder / name for name in ("val", "test") if (folder / name).is_dir()), None)
    if (folder / "train").is_dir() and val_dir is not None:
        train, val = find_pairs(folder / "train"), find_pairs(val_dir)
    else:
        pairs = find_pairs(folder)
        if len(pairs) < 2:
            raise EvaluatorSetupError(f"dataset folder {folder} needs at least 2 image/mask pairs (train and val)")
        order = list(range(len(pairs)))
        random.Random(seed).shuffle(order)
        n_val = max(1, len(pairs) // 5)
        val = [pairs[i] for i in sorted(order[:n_val])]
        train = [pairs[i] for i in sorted(order[n_val:])]
    for image_path, mask_path in train + val:
        for path in (image_path, mask_path):
            try:
                with Image.open(path) as image:
                    image.size  # noqa: B018 - reading the header is the check
            except OSError as error:
                raise EvaluatorSetupError(f"dataset file {path} cannot be read as an image: {error}") from None
    return train, val


def read_pair(image_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    with Image.open(image_path) as image:
        rgb = np.array(image.convert("RGB"))
    with Image.open(mask_path) as mask:
        if mask.size != (rgb.shape[1], rgb.shape[0]):
            mask = mask.resize((rgb.shape[1], rgb.shape[0]), Image.Resampling.NEAREST)
        binary = np.array(mask.convert("L")) > 127
    return rgb, binary


@dataclass
class Prepared:
    """One image at the encoder's input size (longest side resized, bottom/right padded)."""

    pixels: torch.Tensor  # uint8 3 x S x S
    target: torch.Tensor  # float S x S, 0/1
    box: torch.Tensor  # float 4: x0 y0 x1 y1 in input pixels
    resized: tuple[int, int]  # (h, w) before padding
    mask: np.ndarray  # bool, original resolution (for the metrics)


def prepare(image: np.ndarray, mask: np.ndarray, size: int) -> Prepared:
    h, w = mask.shape
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    pixels = torch.from_numpy(image).permute(2, 0, 1)[None].float()
    pixels = F.interpolate(pixels, (nh, nw), mode="bilinear", align_corners=False, antialias=True)[0]
    padded = torch.zeros(3, size, size, dtype=torch.uint8)
    padded[:, :nh, :nw] = pixels.round().clamp(0, 255).to(torch.uint8)
    resized_mask = F.interpolate(torch.from_numpy(mask)[None, None].float(), (nh, nw), mode="bilinear")[0, 0]
    target = torch.zeros(size, size)
    target[:nh, :nw] = (resized_mask > 0.5).float()
    ys, xs = np.nonzero(mask)
    box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1] if len(xs) else [0, 0, w, h]
    return Prepared(padded, target, torch.tensor(box, dtype=torch.float32) * scale, (nh, nw), mask)


def dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    probs = torch.sigmoid(logits).flatten(1)
    target = target.flatten(1)
    return (1 - (2 * (probs * target).sum(1) + 1) / (probs.sum(1) + target.sum(1) + 1)).mean()


def overlap_scores(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """IoU and Dice of two boolean masks (1.0 when both are empty)."""
    inter, total = np.logical_and(pred, gt).sum(), pred.sum() + gt.sum()
    if total == 0:
        return 1.0, 1.0
    return float(inter / (total - inter)), float(2 * inter / total)


class SamLoraEvaluator(Evaluator):
    """LoRA ranks of 32 SAM image-encoder module groups, scored by a one-epoch segmentation proxy."""

    fidelity_option = "steps"  # what the final stage sets to train again (agent/final.py)

    def __init__(
        self,
        model_path: str | None = None,
        data: str | None = None,
        steps: int | None = None,
        device: str | None = None,
        eval_timeout: float | None = None,
        seed: int = 0,
        report_every: int | None = None,
    ) -> None:
        check_budget(steps, eval_timeout, "batches")
        self.report_every = report_every
        self.space = sam_lora_space()
        self.metric = Metric(
            "seg_score", True, "0.25 S-alpha + 0.25 E-phi + 0.25 weighted F-beta + 0.125 IoU + 0.125 Dice"
        )
        self.device, self.amp, self.resources = training_device(device)
        self.seed, self.eval_timeout = seed, eval_timeout
        self.embedded = not model_path
        # data and model paths are checked before anything heavy is loaded
        splits = load_splits(Path(data).expanduser(), seed) if data else None
        model_dir = Path(model_path).expanduser() if model_path else None
        if model_dir is not None and not (model_dir / "config.json").is_file():
            raise EvaluatorSetupError(
                f"--model-path {model_dir} is not a SAM model folder (no config.json); pass a transformers SamModel "
                "folder such as a download of facebook/sam-vit-base"
            )
        self.model = self._load_model(model_dir) if model_dir else tiny_sam()
        self.model = self.model.to(self.device).requires_grad_(False).eval()
        self.groups = sam_lora_groups(self.model)
        self.size = int(self.model.config.vision_config.image_size)
        mean, std = self._pixel_stats(model_dir)
        self.mean = torch.tensor(mean).view(3, 1, 1).to(self.device)
        self.std = torch.tensor(std).view(3, 1, 1).to(self.device)
        base = TINY_PROXY if self.embedded else REAL_PROXY
        self.proxy = ProxySettings(base.batch_size, base.lr, steps or base.max_batches)
        self._threads = tiny_cpu_threads(self.device, self.model)
        if splits is None:
            with tempfile.TemporaryDirectory(prefix="sam_lora_") as tmp:
                splits = load_splits(write_tiny_dataset(Path(tmp)), seed)
                self._load_data(*splits, cache=True)
            self.dataset = "tiny-ellipses"
        else:
            self._load_data(*splits, cache=None)
            self.dataset = Path(data).name
        per_epoch = -(-len(self.train_pairs) // self.proxy.batch_size)
        self.max_fidelity = float(self.proxy.max_batches or per_epoch)  # batches of one evaluation
        if self.embedded or data is None:
            what = "model and data" if self.embedded and data is None else "model" if self.embedded else "data"
            Console(stderr=True).print(
                f"[yellow]note:[/yellow] sam_lora runs on its embedded tiny {what} (random-weight SAM, synthetic "
                "ellipses): its scores only prove that the pipeline works. For real scores pass --model-path (a "
                "SamModel folder) and --data (images/ and masks/).",
                highlight=False,
            )

    # ---- set-up -------------------------------------------------------------------------
    @staticmethod
    def _load_model(path: Path) -> torch.nn.Module:
        from transformers import SamModel

        try:
            return SamModel.from_pretrained(path)
        except Exception as error:
            raise EvaluatorSetupError(f"cannot load a SamModel from --model-path {path}: {error}") from None

    @staticmethod
    def _pixel_stats(model_dir: Path | None) -> tuple[Any, Any]:
        config = model_dir / "preprocessor_config.json" if model_dir else None
        if config is not None and config.is_file():
            try:
                values = json.loads(config.read_text())
                return values.get("image_mean", SAM_MEAN), values.get("image_std", SAM_STD)
            except json.JSONDecodeError as error:
                raise EvaluatorSetupError(f"{config} is not valid JSON: {error}") from None
        return SAM_MEAN, SAM_STD

    def _load_data(self, train: list[tuple[Path, Path]], val: list[tuple[Path, Path]], cache: bool | None) -> None:
        """Prepared samples are kept in memory when small enough (always for the embedded set)."""
        if cache is None:
            cache = (len(train) + len(val)) * 3 * self.size**2 <= CACHE_BYTES
        self.train_pairs, self.val_pairs = train, val
        self._cache: dict[Path, Prepared] | None = {} if cache else None
        if cache:
            for pair in train + val:
                self._prepared(pair)

    def _prepared(self, pair: tuple[Path, Path]) -> Prepared:
        if self._cache is not None and pair[0] in self._cache:
            return self._cache[pair[0]]
        sample = prepare(*read_pair(*pair), self.size)
        if self._cache is not None:
            self._cache[pair[0]] = sample
        return sample

    def describe(self) -> str:
        source = "embedded tiny random SAM (pipeline check only)" if self.embedded else "SAM"
        split = f"{len(self.train_pairs)} train / {len(self.val_pairs)} val"
        return f"{super().describe()} on {source}, {self.dataset}: {split}"

    # ---- one evaluation -----------------------------------------------------------------
    def ranks(self, ncode: str) -> list[int]:
        config = decode(self.space, ncode)
        return [int(config[slot.name]) for slot in self.space.slots]

    def metric_names(self) -> frozenset[str]:
        return frozenset({self.metric.name, *WEIGHTS, "train_loss", "lora_params"})

    def known_before(self, ncode: str) -> dict[str, float]:
        """The LoRA's parameter count (``lora_params``): the ranks and the frozen model's shapes decide it."""
        return {"lora_params": float(lora_parameter_count(self.model, self.groups, self.ranks(ncode)))}

    def build_lora(self, ncode: str) -> torch.nn.Module:
        """A fresh copy of the model with the NCode's LoRA (a peft model); the mask decoder is trainable."""
        from peft import get_peft_model

        model = copy.deepcopy(self.model)
        torch.manual_seed(self.seed)
        with warnings.catch_warnings():  # peft calls a transformers API deprecated for v6
            warnings.simplefilter("ignore", FutureWarning)
            wrapped = get_peft_model(model, grouped_lora_config(self.groups, self.ranks(ncode)))
        wrapped.base_model.model.mask_decoder.requires_grad_(True)
        return wrapped

    def _batch(self, samples: list[Prepared]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = torch.stack([s.pixels for s in samples]).to(self.device).float() / 255
        pixels = (pixels - self.mean) / self.std
        for i, s in enumerate(samples):  # padding is zero after normalisation, as in SAM
            pixels[i, :, s.resized[0] :, :] = 0
            pixels[i, :, :, s.resized[1] :] = 0
        boxes = torch.stack([s.box for s in samples])[:, None].to(self.device)
        return pixels, boxes

    def _logits(self, model: torch.nn.Module, samples: list[Prepared]) -> torch.Tensor:
        """Mask logits at the input resolution, B x S x S."""
        pixels, boxes = self._batch(samples)
        with autocast(self.device, self.amp):
            out = model(pixel_values=pixels, input_boxes=boxes, multimask_output=False)
        low = out.pred_masks[:, 0, 0].float()
        return F.interpolate(low[:, None], (self.size, self.size), mode="bilinear", align_corners=False)[:, 0]

    def evaluate(self, ncode: str) -> Outcome:
        return self.evaluate_reporting(ncode, Reporter())

    def evaluate_reporting(self, ncode: str, reporter: Reporter) -> Outcome:
        """With ``--report-every N`` the model is validated every N batches and the score reported; a stopped
        training ends there (recorded as stopped with that score)."""
        deadline = Deadline(self.eval_timeout)

        def checkpoint(model: torch.nn.Module, batches: int) -> bool:
            score = seg_score(self._validate(model, deadline))
            model.train()
            return reporter.report(score, batches)

        with torch_threads(self._threads), failures_as_errors(self.device):
            generator = seed_everything(self.seed)
            model = self.build_lora(ncode)
            try:
                lora_params = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
                loss = self._train(model, generator, deadline, checkpoint if self.report_every else None)
                if reporter.should_stop():
                    return Outcome(None, status="failed", error="stopped")  # recorded as stopped, its last report
                metrics = self._validate(model, deadline)
            finally:
                del model
        metrics = {**metrics, "train_loss": loss, "lora_params": lora_params}
        return Outcome(score=seg_score(metrics), metrics=metrics, fidelity=self.max_fidelity)

    def _train(
        self, model: torch.nn.Module, generator: torch.Generator, deadline: Deadline,
        checkpoint: Callable[[torch.nn.Module, int], bool] | None = None,
    ) -> float:  # fmt: skip
        """Train on the proxy's batches; ``checkpoint(model, batches done)`` every --report-every batches before the
        last, and training ends when it returns True."""
        proxy = self.proxy
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=proxy.lr)
        scaler = grad_scaler(self.device, self.amp)
        order = torch.randperm(len(self.train_pairs), generator=generator).tolist()
        batches = [order[i : i + proxy.batch_size] for i in range(0, len(order), proxy.batch_size)]
        if proxy.max_batches is not None:  # --steps: that many batches, cycling past one epoch if needed
            batches = [batches[i % len(batches)] for i in range(proxy.max_batches)]
        model.train()
        losses = []
        for number, batch in enumerate(batches):
            deadline.check(f"training batch {number + 1}/{len(batches)}")
            samples = [self._prepared(self.train_pairs[i]) for i in batch]
            logits = self._logits(model, samples)
            target = torch.stack([s.target for s in samples]).to(self.device)
            loss = F.binary_cross_entropy_with_logits(logits, target) + dice_loss(logits, target)
            losses.append(check_finite(loss, f"training loss at batch {number + 1}"))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            done = number + 1
            if checkpoint and done < len(batches) and done % self.report_every == 0 and checkpoint(model, done):
                break
        return float(np.mean(losses))

    @torch.no_grad()
    def _validate(self, model: torch.nn.Module, deadline: Deadline) -> dict[str, float]:
        from py_sod_metrics import Emeasure, Smeasure, WeightedFmeasure

        model.eval()
        s_measure, e_measure, wf_measure = Smeasure(), Emeasure(), WeightedFmeasure()
        ious, dices = [], []
        size = self.proxy.batch_size
        for start in range(0, len(self.val_pairs), size):
            deadline.check(f"validation image {start + 1}/{len(self.val_pairs)}")
            samples = [self._prepared(pair) for pair in self.val_pairs[start : start + size]]
            logits = self._logits(model, samples)
            check_finite(logits, "validation mask logits")
            for sample, logit in zip(samples, logits, strict=True):
                nh, nw = sample.resized
                full = F.interpolate(logit[None, None, :nh, :nw], sample.mask.shape, mode="bilinear")[0, 0]
                prob = torch.sigmoid(full).cpu().numpy()
                pred = (prob * 255).round().astype(np.uint8)
                gt = sample.mask.astype(np.uint8) * 255
                for measure in (s_measure, e_measure, wf_measure):
                    measure.step(pred=pred, gt=gt)
                iou, dice = overlap_scores(prob > 0.5, sample.mask)
                ious.append(iou)
                dices.append(dice)
        return {
            "s_alpha": float(s_measure.get_results()["sm"]),
            "e_phi": float(np.mean(e_measure.get_results()["em"]["curve"])),
            "wf_beta": float(wf_measure.get_results()["wfm"]),
            "iou": float(np.mean(ious)),
            "dice": float(np.mean(dices)),
        }


def seg_score(metrics: dict[str, float]) -> float:
    """The searched score: the weighted sum of the segmentation metrics (WEIGHTS)."""
    return sum(weight * metrics[name] for name, weight in WEIGHTS.items())


__all__ = ["GROUPS", "SamLoraEvaluator", "sam_lora_groups", "write_tiny_dataset"]
