"""Stable Diffusion LoRA ranks: DreamBooth-style proxy fine-tune, scored with CLIP-T and CLIP-I.

Space ``diffusion_lora``: 48 slots ``rank_00`` .. ``rank_47``, each a LoRA rank in {4, 8, 16}.

**Module groups.** The LoRA targets are the attention projections (``to_q``, ``to_k``, ``to_v``,
``to_out.0``) of the UNet's transformer blocks (diffusers ``BasicTransformerBlock``), taken in
data-flow order (down blocks, mid block, up blocks; module order within each). Each block gives
three natural groups:

1. ``attn1.{to_q,to_k,to_v,to_out.0}``: self-attention;
2. ``attn2.{to_q,to_out.0}``: cross-attention, the image side (queries and output);
3. ``attn2.{to_k,to_v}``: cross-attention, the text side (what Custom Diffusion tunes).

SD-1.5 (and SD-2.x) has 16 transformer blocks (down 3 x 2, mid 1, up 3 x 3), so 16 x 3 = 48
groups, one per slot: slot ``3b + k`` is natural group k of block b. Another UNet with B blocks
has 3B natural groups, cut into 48 contiguous runs of near-equal size (natural group i goes to slot
floor(48 i / 3B); SDXL's 70 blocks give 4-5 natural groups per slot). A UNet with fewer than 16
transformer blocks is refused. The embedded tiny UNet has SD-1.5's block layout (4 levels, the
first three with cross-attention, 2 layers per down block, 3 per up block) at toy widths, hence
the same 48 groups.

Each module of slot g's group gets rank r_g and ``lora_alpha = r_g`` through peft's
``rank_pattern``/``alpha_pattern``.

**Proxy.** Per evaluation: a fresh deep copy of the frozen UNet is wrapped with the NCode's LoRA
(same seed, so codes differ only by their ranks), trained for ``steps`` steps on the concept
images with the DreamBooth denoising loss (MSE to the noise, or to v for v-prediction models),
then one image per validation prompt is sampled (DDIM, classifier-free guidance, fixed initial
noise). Score ``clip_score = 0.5 * CLIP-T + 0.5 * CLIP-I``: CLIP-T is the mean cosine similarity
between each generated image and its prompt, CLIP-I the mean cosine similarity between generated
and concept images (CLIP image and text embeddings from ``CLIPModel`` + ``CLIPProcessor``).

**Inputs.** ``--model-path``: an SD-1.5-style folder in diffusers layout (``unet/``, ``vae/``,
``text_encoder/``, ``tokenizer/``, optional ``scheduler/``); it needs ``--clip-path`` (a
CLIPModel folder such as openai/clip-vit-large-patch14). ``--concept-dir``: the concept images
(png/jpg/webp/bmp); an image's caption is its sidecar ``<stem>.txt`` or else
``"a photo of sks object"``. ``--prompts``: a text file, one validation prompt per line.
``--steps``: training steps per evaluation.

**Default (no flags).** Everything is built here with random weights from small configs: a tiny
UNet2DConditionModel, AutoencoderKL, CLIPTextModel with a byte-level character tokenizer, and a
tiny CLIPModel, plus six procedurally drawn 32x32 concept images. It runs about a second per
evaluation on a CPU and its scores only prove that the pipeline works.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
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
from tools.spaces import diffusion_lora_space

GROUPS = 48
PROJECTIONS = ("to_q", "to_k", "to_v", "to_out.0")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DEFAULT_CAPTION = "a photo of sks object"
DEFAULT_REAL_PROMPTS = (
    "a photo of sks object",
    "a sks object on the beach",
    "a sks object in the snow",
    "a painting of sks object",
)
TINY_CAPTION = "a photo of sks shape"
TINY_PROMPTS = ("a photo of sks shape", "a sks shape on a green background")
CLIP_T_WEIGHT, CLIP_I_WEIGHT = 0.5, 0.5
SD_SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer")


@dataclass(frozen=True)
class ProxySettings:
    """How long and how large one evaluation is."""

    steps: int
    batch_size: int
    lr: float
    inference_steps: int
    guidance: float


TINY_PROXY = ProxySettings(steps=4, batch_size=4, lr=1e-3, inference_steps=3, guidance=3.0)
REAL_PROXY = ProxySettings(steps=100, batch_size=1, lr=1e-4, inference_steps=25, guidance=7.5)


def unet_lora_groups(unet: torch.nn.Module, groups: int = GROUPS) -> list[list[str]]:
    """The module names of each of the ``groups`` slots (see the module docstring)."""
    from diffusers.models.attention import BasicTransformerBlock

    present = dict(unet.named_modules())
    blocks = [name for name, module in present.items() if isinstance(module, BasicTransformerBlock)]
    flow = ("down_blocks.", "mid_block.", "up_blocks.")  # data-flow order; diffusers registers mid_block last
    blocks.sort(key=lambda name: next((i for i, prefix in enumerate(flow) if name.startswith(prefix)), len(flow)))
    natural: list[list[str]] = []
    for name in blocks:
        parts = (
            [f"{name}.attn1.{p}" for p in PROJECTIONS],
            [f"{name}.attn2.to_q", f"{name}.attn2.to_out.0"],
            [f"{name}.attn2.to_k", f"{name}.attn2.to_v"],
        )
        natural.extend([n for n in part if isinstance(present.get(n), torch.nn.Linear)] for part in parts)
    natural = [part for part in natural if part]
    if len(natural) < groups:
        raise EvaluatorSetupError(
            f"the UNet has {len(natural)} attention-projection groups, fewer than the {groups} slots of "
            "diffusion_lora; use an SD-1.5-style UNet (16 transformer blocks)"
        )
    return [[name for part in run for name in part] for run in split_evenly(natural, groups)]


def tiny_concept_images(count: int = 6, size: int = 32, seed: int = 0) -> list[Image.Image]:
    """The embedded concept: a red disc with a yellow square inside, on varied pale backgrounds."""
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(count):
        background = tuple(int(c) for c in rng.integers(150, 256, size=3))
        image = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(image)
        radius = int(rng.integers(size // 4, size // 3 + 1))
        cx, cy = (int(c) for c in rng.integers(radius, size - radius, size=2))
        draw.ellipse((cx - radius, cy - radius, cx + radius, cy + radius), fill=(210, 30, 30))
        half = radius // 2
        draw.rectangle((cx - half // 2 - 1, cy - half // 2 - 1, cx + half // 2, cy + half // 2), fill=(250, 220, 0))
        images.append(image)
    return images


def char_clip_tokenizer(max_length: int):
    """A CLIPTokenizer with no BPE merges: byte-level characters (and their end-of-word forms)."""
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    alphabet = sorted(ByteLevel.alphabet())
    for suffix in ("", "</w>"):
        for char in alphabet:
            vocab.setdefault(char + suffix, len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=max_length)


def sd_scheduler():
    """SD-1.5's training noise schedule (for a model folder without ``scheduler/``)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def tiny_stable_diffusion() -> dict[str, Any]:
    """Random-weight SD-1.5-shaped components at toy size (32x32 images, 8x8 latents)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    tokenizer = char_clip_tokenizer(32)
    text_config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=32, bos_token_id=0, eos_token_id=1, pad_token_id=1, projection_dim=32,
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=8, in_channels=4, out_channels=4, block_out_channels=(16, 16, 32, 32), layers_per_block=2,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
        )  # fmt: skip
        vae = AutoencoderKL(
            in_channels=3, out_channels=3, block_out_channels=(16, 32, 32), latent_channels=4, norm_num_groups=8,
            down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3, sample_size=32,
        )  # fmt: skip
        text_encoder = CLIPTextModel(text_config)
    return {"unet": unet, "vae": vae, "text_encoder": text_encoder, "tokenizer": tokenizer, "scheduler": sd_scheduler()}


def tiny_clip(image_size: int = 32):
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor

    try:  # the PIL backend (torchvision is not a dependency)
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor

    tokenizer = char_clip_tokenizer(32)
    config = CLIPConfig(
        text_config={
            "vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
            "num_attention_heads": 4, "max_position_embeddings": 32, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={
            "image_size": image_size, "patch_size": 8, "hidden_size": 32, "intermediate_size": 64,
            "num_hidden_layers": 2, "num_attention_heads": 4,
        },
        projection_dim=32,
    )  # fmt: skip
    with torch.random.fork_rng():
        torch.manual_seed(1)
        model = CLIPModel(config)
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )
    return model, CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer)


def load_stable_diffusion(path: Path, dtype: torch.dtype) -> dict[str, Any]:
    if not path.is_dir():
        raise EvaluatorSetupError(
            f"--model-path {path} is not a folder; pass a Stable Diffusion 1.5-style folder in diffusers layout "
            f"({', '.join(s + '/' for s in SD_SUBFOLDERS)}, scheduler/)"
        )
    missing = [s for s in SD_SUBFOLDERS if not (path / s).is_dir()]
    missing += [
        f"{s}/config.json" for s in SD_SUBFOLDERS[:3] if s not in missing and not (path / s / "config.json").is_file()
    ]
    if missing:
        raise EvaluatorSetupError(
            f"--model-path {path} is not a Stable Diffusion folder in diffusers layout: missing {', '.join(missing)} "
            "(e.g. a download of stable-diffusion-v1-5/stable-diffusion-v1-5)"
        )
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    try:
        parts = {
            "unet": UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=dtype),
            "vae": AutoencoderKL.from_pretrained(path, subfolder="vae", torch_dtype=dtype),
            "text_encoder": CLIPTextModel.from_pretrained(path, subfolder="text_encoder", torch_dtype=dtype),
            "tokenizer": CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"),
        }
        has_scheduler = (path / "scheduler").is_dir()
        parts["scheduler"] = (
            DDPMScheduler.from_pretrained(path, subfolder="scheduler") if has_scheduler else sd_scheduler()
        )
    except Exception as error:
        raise EvaluatorSetupError(f"cannot load the Stable Diffusion model in --model-path {path}: {error}") from None
    return parts


def check_clip_dir(path: Path) -> Path:
    if not (path / "config.json").is_file():
        raise EvaluatorSetupError(
            f"--clip-path {path} is not a CLIP model folder (no config.json); pass a transformers CLIPModel folder "
            "such as a download of openai/clip-vit-large-patch14"
        )
    return path


def load_clip(path: Path, dtype: torch.dtype):
    from transformers import CLIPModel, CLIPProcessor

    try:
        return CLIPModel.from_pretrained(path, torch_dtype=dtype), CLIPProcessor.from_pretrained(path)
    except Exception as error:
        raise EvaluatorSetupError(f"cannot load the CLIP model in --clip-path {path}: {error}") from None


def load_concepts(folder: Path) -> tuple[list[Image.Image], list[str]]:
    if not folder.is_dir():
        raise EvaluatorSetupError(f"--concept-dir {folder} is not a folder; pass a folder of concept images")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise EvaluatorSetupError(f"--concept-dir {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    images, captions = [], []
    for file in files:
        try:
            with Image.open(file) as image:
                images.append(image.convert("RGB"))
        except OSError as error:
            raise EvaluatorSetupError(f"concept image {file} cannot be read: {error}") from None
        sidecar = file.with_suffix(".txt")
        captions.append(sidecar.read_text().strip() if sidecar.is_file() else DEFAULT_CAPTION)
    return images, captions


def load_prompts(path: Path) -> list[str]:
    if not path.is_file():
        raise EvaluatorSetupError(f"--prompts {path} is not a file; pass a text file with one prompt per line")
    prompts = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not prompts:
        raise EvaluatorSetupError(f"--prompts {path} holds no prompt; write one prompt per line")
    return prompts


def square(image: Image.Image, size: int) -> Image.Image:
    """Centre crop to a square, resize to ``size``."""
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)


class DiffusionLoraEvaluator(Evaluator):
    """LoRA ranks of 48 UNet module groups, scored by a short DreamBooth-style fine-tune."""

    fidelity_option = "steps"  # what the final stage sets to train again (agent/final.py)

    def __init__(
        self,
        model_path: str | None = None,
        clip_path: str | None = None,
        concept_dir: str | None = None,
        prompts: str | None = None,
        steps: int | None = None,
        device: str | None = None,
        eval_timeout: float | None = None,
        seed: int = 0,
        report_every: int | None = None,
    ) -> None:
        self.report_every = report_every
        if model_path and not clip_path:
            raise EvaluatorSetupError(
                f"--model-path {model_path} needs --clip-path (a CLIPModel folder, e.g. openai/clip-vit-large-patch14) "
                "to score the generated images"
            )
        check_budget(steps, eval_timeout, "training steps")
        self.space = diffusion_lora_space()
        self.metric = Metric(
            "clip_score", True, "0.5 * CLIP-T + 0.5 * CLIP-I after a short DreamBooth-style LoRA fine-tune"
        )
        self.device, self.amp, self.resources = training_device(device)
        weight_dtype = self.amp or torch.float32
        self.seed, self.eval_timeout = seed, eval_timeout
        self.embedded = not model_path
        # every path is checked before anything heavy is loaded
        concepts = load_concepts(Path(concept_dir).expanduser()) if concept_dir else None
        prompt_list = load_prompts(Path(prompts).expanduser()) if prompts else None
        clip_dir = check_clip_dir(Path(clip_path).expanduser()) if clip_path else None
        parts = load_stable_diffusion(Path(model_path).expanduser(), weight_dtype) if model_path else None
        clip = load_clip(clip_dir, weight_dtype) if clip_dir else None

        if parts is None:
            parts = tiny_stable_diffusion()
        base = TINY_PROXY if self.embedded else REAL_PROXY
        self.proxy = ProxySettings(steps or base.steps, base.batch_size, base.lr, base.inference_steps, base.guidance)
        self.max_fidelity = float(self.proxy.steps)  # training steps of one evaluation
        self.scheduler = parts["scheduler"]
        # real weights come in weight_dtype from from_pretrained; the tiny ones stay fp32 (autocast still applies)
        self.unet = parts["unet"].to(self.device).requires_grad_(False)
        self.vae = parts["vae"].to(self.device).requires_grad_(False).eval()
        self.groups = unet_lora_groups(self.unet)
        vae_scale = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.resolution = int(self.unet.config.sample_size) * vae_scale
        self.clip, self.clip_processor = clip or tiny_clip()
        self.clip = self.clip.to(self.device).requires_grad_(False).eval()
        self._threads = tiny_cpu_threads(self.device, self.unet)
        if concepts is None:
            images = tiny_concept_images(size=self.resolution)
            concepts = (images, [TINY_CAPTION] * len(images))
        self.concept_images = [square(image, self.resolution) for image in concepts[0]]
        self.prompts = prompt_list or list(TINY_PROMPTS if self.embedded else DEFAULT_REAL_PROMPTS)
        self.dataset = Path(concept_dir).name if concept_dir else "tiny-shapes"
        with torch_threads(self._threads), torch.no_grad():
            self._precompute(parts["tokenizer"], parts["text_encoder"].to(self.device), concepts[1])
        tiny = [name for name, given in (("Stable Diffusion", model_path), ("CLIP", clip_path)) if not given]
        if tiny:
            Console(stderr=True).print(
                f"[yellow]note:[/yellow] diffusion_lora runs on embedded tiny {' and '.join(tiny)} models with random "
                "weights: its scores only prove that the pipeline works. For real scores pass --model-path "
                "(SD-1.5 in diffusers layout), --clip-path, --concept-dir and --prompts.",
                highlight=False,
            )

    # ---- set-up -------------------------------------------------------------------------
    def _precompute(self, tokenizer: Any, text_encoder: torch.nn.Module, captions: list[str]) -> None:
        """Frozen parts computed once: latents and caption embeddings of the concept images,
        validation-prompt and empty-prompt embeddings, CLIP features of prompts and concepts."""

        def encode(texts: list[str]) -> torch.Tensor:
            ids = tokenizer(
                texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                return_tensors="pt",
            ).input_ids.to(self.device)  # fmt: skip
            return text_encoder(ids)[0].float()

        pixels = torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in self.concept_images])
        pixels = (pixels.float() / 127.5 - 1).to(self.device, self.vae.dtype)
        latents = self.vae.encode(pixels).latent_dist.mean.float()
        self.latents = latents * self.vae.config.scaling_factor
        self.caption_embeds = encode(captions)
        self.prompt_embeds = encode(self.prompts)
        self.empty_embed = encode([""])
        self.prompt_features = self._text_features(self.prompts)
        self.concept_features = self._image_features([np.array(image) for image in self.concept_images])

    def _text_features(self, texts: list[str]) -> torch.Tensor:
        tokens = self.clip_processor.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        out = self.clip.get_text_features(**{k: v.to(self.device) for k, v in tokens.items()})
        return F.normalize(getattr(out, "pooler_output", out).float(), dim=-1)

    def _image_features(self, images: list[np.ndarray]) -> torch.Tensor:
        pixels = self.clip_processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
        out = self.clip.get_image_features(pixel_values=pixels.to(self.device, self.clip.dtype))
        return F.normalize(getattr(out, "pooler_output", out).float(), dim=-1)

    def describe(self) -> str:
        source = "embedded tiny random models (pipeline check only)" if self.embedded else "Stable Diffusion"
        return f"{super().describe()} on {source}, {self.proxy.steps} steps per evaluation"

    # ---- one evaluation -----------------------------------------------------------------
    def ranks(self, ncode: str) -> list[int]:
        config = decode(self.space, ncode)
        return [int(config[slot.name]) for slot in self.space.slots]

    def metric_names(self) -> frozenset[str]:
        return frozenset({self.metric.name, "clip_t", "clip_i", "train_loss", "lora_params"})

    def known_before(self, ncode: str) -> dict[str, float]:
        """The LoRA's parameter count (``lora_params``): the ranks and the frozen model's shapes decide it."""
        return {"lora_params": float(lora_parameter_count(self.unet, self.groups, self.ranks(ncode)))}

    def build_lora(self, ncode: str) -> torch.nn.Module:
        """A fresh copy of the frozen UNet wrapped with the NCode's LoRA (a peft model)."""
        from peft import get_peft_model

        unet = copy.deepcopy(self.unet)
        torch.manual_seed(self.seed)
        return get_peft_model(unet, grouped_lora_config(self.groups, self.ranks(ncode)))

    def evaluate(self, ncode: str) -> Outcome:
        return self.evaluate_reporting(ncode, Reporter())

    def evaluate_reporting(self, ncode: str, reporter: Reporter) -> Outcome:
        """With ``--report-every N`` the LoRA is scored every N training steps (images generated and compared)
        and the score reported; a stopped training ends there (recorded as stopped with that score)."""
        deadline = Deadline(self.eval_timeout)

        def checkpoint(model: torch.nn.Module, steps: int) -> bool:
            score = self._clip_scores(model, deadline)[0]
            model.train()
            return reporter.report(score, steps)

        with torch_threads(self._threads), failures_as_errors(self.device):
            generator = seed_everything(self.seed)
            model = self.build_lora(ncode)
            try:
                lora_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
                loss = self._train(model, generator, deadline, checkpoint if self.report_every else None)
                if reporter.should_stop():
                    return Outcome(None, status="failed", error="stopped")  # recorded as stopped, its last report
                score, clip_t, clip_i = self._clip_scores(model, deadline)
            finally:
                del model
        metrics = {"clip_t": clip_t, "clip_i": clip_i, "train_loss": loss, "lora_params": lora_params}
        return Outcome(score=score, metrics=metrics, fidelity=self.max_fidelity)

    def _clip_scores(self, model: torch.nn.Module, deadline: Deadline) -> tuple[float, float, float]:
        """(score, CLIP-T, CLIP-I) of the images the model generates for the validation prompts."""
        images = self._generate(model, deadline)
        with torch.no_grad():
            generated = self._image_features(images)
        clip_t = float((generated * self.prompt_features).sum(-1).mean())
        clip_i = float((generated @ self.concept_features.T).mean())
        return CLIP_T_WEIGHT * clip_t + CLIP_I_WEIGHT * clip_i, clip_t, clip_i

    def _train(
        self, model: torch.nn.Module, generator: torch.Generator, deadline: Deadline,
        checkpoint: Callable[[torch.nn.Module, int], bool] | None = None,
    ) -> float:  # fmt: skip
        """Train for the proxy's steps; ``checkpoint(model, steps done)`` every --report-every steps before the
        last, and training ends when it returns True."""
        proxy, scheduler = self.proxy, self.scheduler
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=proxy.lr, weight_decay=1e-2)
        scaler = grad_scaler(self.device, self.amp)
        prediction = scheduler.config.get("prediction_type", "epsilon")
        model.train()
        losses = []
        for step in range(proxy.steps):
            deadline.check(f"training step {step + 1}/{proxy.steps}")
            index = torch.randint(len(self.latents), (proxy.batch_size,), generator=generator)
            latents = self.latents[index.to(self.device)]
            noise = torch.randn(latents.shape, generator=generator).to(self.device)
            timesteps = torch.randint(scheduler.config.num_train_timesteps, (len(index),), generator=generator)
            timesteps = timesteps.to(self.device)
            noisy = scheduler.add_noise(latents, noise, timesteps)
            target = scheduler.get_velocity(latents, noise, timesteps) if prediction == "v_prediction" else noise
            with autocast(self.device, self.amp):
                predicted = model(noisy, timesteps, encoder_hidden_states=self.caption_embeds[index.to(self.device)])
            loss = F.mse_loss(predicted.sample.float(), target.float())
            losses.append(check_finite(loss, f"training loss at step {step + 1}"))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            done = step + 1
            if checkpoint and done < proxy.steps and done % self.report_every == 0 and checkpoint(model, done):
                break
        tail = losses[-max(1, len(losses) // 4) :]
        return float(np.mean(tail))

    @torch.no_grad()
    def _generate(self, model: torch.nn.Module, deadline: Deadline) -> list[np.ndarray]:
        """One image per validation prompt, from the same initial noise for every evaluation."""
        from diffusers import DDIMScheduler

        model.eval()
        scheduler = DDIMScheduler.from_config(self.scheduler.config)
        generator = torch.Generator().manual_seed(self.seed + 1)
        latent_shape = (1, *self.latents.shape[1:])
        guided = self.proxy.guidance > 1
        images = []
        for number, embed in enumerate(self.prompt_embeds):
            scheduler.set_timesteps(self.proxy.inference_steps, device=self.device)
            latents = torch.randn(latent_shape, generator=generator).to(self.device) * scheduler.init_noise_sigma
            context = torch.stack([self.empty_embed[0], embed]) if guided else embed[None]
            for t in scheduler.timesteps:
                deadline.check(f"sampling prompt {number + 1}/{len(self.prompts)}")
                batch = scheduler.scale_model_input(torch.cat([latents] * len(context)), t)
                with autocast(self.device, self.amp):
                    eps = model(batch, t, encoder_hidden_states=context).sample.float()
                if guided:
                    eps = eps[0:1] + self.proxy.guidance * (eps[1:2] - eps[0:1])
                latents = scheduler.step(eps, t, latents).prev_sample
            decoded = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.vae.dtype)).sample.float()
            check_finite(decoded, f"generated image for prompt {number + 1}")
            image = ((decoded[0] / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0)
            images.append(image.cpu().numpy())
        return images


__all__ = ["GROUPS", "DiffusionLoraEvaluator", "unet_lora_groups"]
