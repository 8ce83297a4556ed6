"""Stable Diffusion LoRA ranks on the embedded tiny models: the proxy end to end, the ranks peft
actually builds, set-up errors, time limits, NaN losses and a search through the real loop."""

from __future__ import annotations

import dataclasses
import math
import re

import pytest
import torch

from evaluators.diffusion_lora import (
    DiffusionLoraEvaluator,
    char_clip_tokenizer,
    tiny_clip,
    tiny_concept_images,
    tiny_stable_diffusion,
    unet_lora_groups,
)
from evaluators.lora_common import lora_ranks
from tests.evaluators.loop import assert_short_search_finishes, reported
from tools.evaluator import EvaluatorSetupError
from tools.evaluator_tool import run_evaluation


@pytest.fixture(scope="module")
def evaluator() -> DiffusionLoraEvaluator:
    return DiffusionLoraEvaluator(device="cpu", seed=0)


def test_tiny_default_scores_a_code_end_to_end(evaluator):
    outcome = run_evaluation(evaluator, "012" * 16)
    assert outcome.status == "ok", outcome.error
    assert math.isfinite(outcome.score)
    assert outcome.cost_s > 0
    metrics = outcome.metrics
    assert outcome.score == pytest.approx(0.5 * metrics["clip_t"] + 0.5 * metrics["clip_i"])
    assert -1 <= metrics["clip_t"] <= 1 and -1 <= metrics["clip_i"] <= 1
    assert math.isfinite(metrics["train_loss"]) and metrics["lora_params"] > 0
    assert run_evaluation(evaluator, "012" * 16).score == pytest.approx(outcome.score)  # same seed, same score


def test_groups_follow_sd15_transformer_blocks(evaluator):
    groups = evaluator.groups
    assert len(groups) == 48
    block = "down_blocks.0.attentions.0.transformer_blocks.0"
    assert groups[0] == [f"{block}.attn1.{p}" for p in ("to_q", "to_k", "to_v", "to_out.0")]
    assert groups[1] == [f"{block}.attn2.to_q", f"{block}.attn2.to_out.0"]
    assert groups[2] == [f"{block}.attn2.to_k", f"{block}.attn2.to_v"]
    assert groups[-1][0].startswith("up_blocks.3.attentions.2.")
    names = [name for group in groups for name in group]
    assert len(names) == len(set(names)) == 16 * 8


@pytest.mark.parametrize("ncode", ["0" * 48, "2" * 48, "012" * 16, "210" * 8 + "1" * 24])
def test_each_group_gets_the_rank_its_slot_asks_for(evaluator, ncode):
    model = evaluator.build_lora(ncode)
    ranks = lora_ranks(model)
    wanted = evaluator.ranks(ncode)
    assert set(ranks) == {name for group in evaluator.groups for name in group}
    for group, rank in zip(evaluator.groups, wanted, strict=True):
        assert {ranks[name] for name in group} == {rank}
    modules = dict(model.named_modules())
    first = evaluator.groups[0][0]
    assert modules[f"base_model.model.{first}"].lora_A["default"].weight.shape[0] == wanted[0]
    assert modules[f"base_model.model.{first}"].scaling["default"] == 1.0  # alpha = rank
    assert not lora_ranks(evaluator.unet)  # the base UNet is never modified
    built = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    assert evaluator.known_before(ncode) == {"lora_params": built}, "the size is known before any training"


def test_other_unets_are_cut_into_48_contiguous_groups():
    from diffusers import UNet2DConditionModel

    def unet(layers: int) -> UNet2DConditionModel:
        return UNet2DConditionModel(
            sample_size=8, block_out_channels=(8, 8, 16, 16), layers_per_block=layers, norm_num_groups=4,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, cross_attention_dim=8, attention_head_dim=4,
        )  # fmt: skip

    groups = unet_lora_groups(unet(3))  # 9 + 1 + 12 = 22 blocks -> 66 natural groups
    assert len(groups) == 48 and all(groups)
    assert sum(len(g) for g in groups) == 22 * 8
    with pytest.raises(EvaluatorSetupError, match="fewer than the 48"):
        unet_lora_groups(unet(1))  # 3 + 1 + 6 = 10 blocks


def test_bad_paths_are_refused_before_the_search(tmp_path):
    clip = tmp_path / "clip"
    clip.mkdir()
    with pytest.raises(EvaluatorSetupError, match=r"--clip-path .*clip is not a CLIP model folder"):
        DiffusionLoraEvaluator(model_path=str(tmp_path), clip_path=str(clip))
    (clip / "config.json").write_text("{}")
    missing = tmp_path / "no-such-model"
    with pytest.raises(EvaluatorSetupError, match=re.escape(str(missing))):
        DiffusionLoraEvaluator(model_path=str(missing), clip_path=str(clip))
    partial = tmp_path / "partial"
    (partial / "unet").mkdir(parents=True)
    with pytest.raises(EvaluatorSetupError, match=r"partial.*missing vae, text_encoder, tokenizer, unet/config.json"):
        DiffusionLoraEvaluator(model_path=str(partial), clip_path=str(clip))
    with pytest.raises(EvaluatorSetupError, match="needs --clip-path"):
        DiffusionLoraEvaluator(model_path=str(partial))
    with pytest.raises(EvaluatorSetupError, match=re.escape(str(tmp_path / "concepts"))):
        DiffusionLoraEvaluator(concept_dir=str(tmp_path / "concepts"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(EvaluatorSetupError, match="holds no images"):
        DiffusionLoraEvaluator(concept_dir=str(tmp_path / "empty"))
    with pytest.raises(EvaluatorSetupError, match=r"prompts\.txt"):
        DiffusionLoraEvaluator(prompts=str(tmp_path / "prompts.txt"))
    with pytest.raises(EvaluatorSetupError, match="--device"):
        DiffusionLoraEvaluator(device="tpu")


def test_timeout_and_nan_become_failed_outcomes(evaluator, monkeypatch):
    monkeypatch.setattr(evaluator, "eval_timeout", 1e-9)
    outcome = run_evaluation(evaluator, "1" * 48)
    assert outcome.status == "failed" and "TimeoutError" in outcome.error and "eval-timeout" in outcome.error
    assert outcome.cost_s > 0
    monkeypatch.setattr(evaluator, "eval_timeout", None)
    monkeypatch.setattr(evaluator, "latents", torch.full_like(evaluator.latents, float("nan")))
    outcome = run_evaluation(evaluator, "1" * 48)
    assert outcome.status == "failed" and "FloatingPointError" in outcome.error


def test_a_model_folder_in_diffusers_layout_loads(tmp_path):
    """The --model-path / --clip-path / --concept-dir / --prompts route, on the tiny models saved to disk."""
    parts = tiny_stable_diffusion()
    model = tmp_path / "sd"
    for name in ("unet", "vae", "text_encoder", "scheduler"):
        parts[name].save_pretrained(model / name)
    parts["tokenizer"].save_pretrained(model / "tokenizer")
    clip_model, processor = tiny_clip()
    clip_model.save_pretrained(tmp_path / "clip")
    processor.save_pretrained(tmp_path / "clip")
    concepts = tmp_path / "concepts"
    concepts.mkdir()
    for number, image in enumerate(tiny_concept_images(count=2)):
        image.save(concepts / f"{number}.png")
    (concepts / "0.txt").write_text("a photo of sks shape")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a sks shape\n\n")
    evaluator = DiffusionLoraEvaluator(
        str(model), str(tmp_path / "clip"), str(concepts), str(prompts), steps=2, device="cpu"
    )
    assert not evaluator.embedded and evaluator.prompts == ["a sks shape"] and evaluator.dataset == "concepts"
    assert evaluator.proxy.steps == 2 and evaluator.proxy.inference_steps == 25
    evaluator.proxy = dataclasses.replace(evaluator.proxy, inference_steps=2)  # keep the CPU test short
    outcome = run_evaluation(evaluator, "0" * 48)
    assert outcome.status == "ok", outcome.error
    assert len(char_clip_tokenizer(32)("ab").input_ids) == 4  # bos, a, b</w>, eos


def test_search_runs_through_the_real_loop(tmp_path):
    assert_short_search_finishes(tmp_path, "diffusion_lora")


def test_report_every_scores_during_training_and_a_stop_ends_it():
    evaluator = DiffusionLoraEvaluator(device="cpu", seed=0, steps=4, report_every=2)
    assert evaluator.max_fidelity == 4.0
    asked: list[float] = []
    outcome = run_evaluation(evaluator, "0" * 48, decide=lambda step, value: asked.append(step) or False)
    assert (outcome.status, outcome.fidelity, asked) == ("ok", 4.0, [2.0])
    stopped = run_evaluation(evaluator, "0" * 48, decide=lambda step, value: True)
    assert (stopped.status, stopped.fidelity) == ("stopped", 2.0) and math.isfinite(stopped.score)


def test_metric_names_are_exactly_what_a_result_reports(evaluator):
    """What a new run's objectives and constraints are checked against (agent.driver.metric_problem)."""
    assert reported(evaluator, "012" * 16) == evaluator.metric_names()
