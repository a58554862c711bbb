"""Style guidance: an inference experiment on the style the default model misses.

The style bar is the one the CPU runs fall short of (cpu8's full evaluation: style 63% against
85%; Twemoji's "flat" read as Noto's "cartoon" most of all). One in five training captions does
not name a style (`data.Sampler._one`: the style is then drawn at random), so a trained model
also knows the prompt *without* its style words: the average over styles. The difference

    eps(prompt) - eps(prompt without its style words)

points from that average toward the asked style only, with subject, place and colour held
still. Style guidance adds it on top of the usual classifier-free guidance:

    eps = eps(empty) + g * (eps(prompt) - eps(empty)) + s * (eps(prompt) - eps(prompt without style))

(the two-scale guidance of InstructPix2Pix / Composable Diffusion, with the style as the second
condition). Unlike a negative prompt that names the other styles (`training.evaluate
--negative-other-styles`, ruled out: it replaced the empty prompt, so the subject lost its
guidance), it leaves the subject's guidance as it is. It costs a third UNet pass a step.
At s = 0 this loop is the pipeline's own, to float rounding (tests/training/test_style_guidance.py).

The style term can be held to the low-noise steps (`below`: only at timesteps t < below), the
"guidance interval" idea (Kynkaanniemi et al., 2024): a picture's subject and layout settle in the
high-noise steps, its shading and outline in the low-noise ones; the steps outside the window skip
the third UNet pass. Measured at cpu9's 16,133 (RUNS.md, forty-first session; 20 steps, S = 4): over
every step style +14 points, top 5 -8; held to t < 500, +9 and -4; held to t < 800, as over every
step. The style and the subject's loss come from the same steps, so the window softens the trade
and does not remove it.

    python -m training.evaluate --model /tmp/m ... --style-guidance 2 [--style-guidance-below 500]
"""

from __future__ import annotations

import torch

from training import data as D


def without_style(caption: str, style: str) -> str:
    """The caption with its style words taken out: "cat, flat style, on a red background" ->
    "cat, on a red background". Evaluation captions name the style with its canonical words."""
    words = D.STYLE_WORDS[style][0]
    parts = caption.split(", ")
    if parts.count(words) != 1:
        raise ValueError(f"caption {caption!r} does not name the style {style!r} as {words!r} once")
    return ", ".join(p for p in parts if p != words)


@torch.no_grad()
def style_guided(pipe, prompts: list[str], styleless: list[str], latents: torch.Tensor, steps: int,
                 guidance: float, style_guidance: float, below: int = 1000) -> torch.Tensor:
    """Pictures [N, 3, H, W] in [0, 1] from the starting `latents`, as `pipe(prompts, latents=...,
    output_type="pt")` draws them, plus `style_guidance` toward each prompt's style at the
    timesteps t < `below` (see above; the default 1000 is every step)."""
    device = pipe.device
    cond, uncond = pipe.encode_prompt(prompts, device, 1, True)
    plain, _ = pipe.encode_prompt(styleless, device, 1, False)
    both, all3 = torch.cat([uncond, cond]), torch.cat([uncond, cond, plain])
    pipe.scheduler.set_timesteps(steps, device=device)
    latents = latents.to(device, cond.dtype) * pipe.scheduler.init_noise_sigma
    extra = pipe.prepare_extra_step_kwargs(None, 0.0)   # what the pipeline passes its scheduler: eta 0, no generator
    for t in pipe.scheduler.timesteps:
        styled = style_guidance != 0 and int(t) < below
        n = 3 if styled else 2       # the style-less prompt's pass only where its term is used
        x = pipe.scheduler.scale_model_input(torch.cat([latents] * n), t)
        e = pipe.unet(x, t, encoder_hidden_states=all3 if styled else both, return_dict=False)[0].chunk(n)
        eps = e[0] + guidance * (e[1] - e[0])
        if styled:
            eps = eps + style_guidance * (e[1] - e[2])
        latents = pipe.scheduler.step(eps, t, latents, **extra, return_dict=False)[0]
    images = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(images, output_type="pt", do_denormalize=[True] * len(images))
