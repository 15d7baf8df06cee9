"""Model FLOPs utilisation of a medium train step against this machine's measured matmul peak.

    python experiments/benchmarks/mfu.py [--spec configs/lm.py:tiny] [--steps 5] [field=value ...]

--spec takes an LM preset (given the medium overrides), a Flamingo preset (e.g.
configs/flamingo.py:smollm2) or a two-tower one (configs/clip.py:micro).

Peak: the median FLOP/s of a 2048^3 fp32 `jnp.dot` (2 n^3 FLOPs). Step FLOPs: the jaxpr count of
the train step (mmjax/flops.py: matmuls and convolutions, scanned layers times their depth, no
remat recomputation), i.e. model FLOPs, not XLA's cost analysis. The peak and the step are timed
alternately in the same run, so both see the same load. Target: MFU >= 70%. When it is missed
the script prints where the time goes: forward, backward and optimizer update measured
separately, and the matmul rate at the model's own shapes.
"""

from __future__ import annotations

import argparse

import _scale_common as C  # pylint: disable=wrong-import-order

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

TARGET = 0.70


def shape_rates(width: int, mlp: int, tokens: int, heads: int, length: int, head_dim: int,
                peak: float) -> list[str]:
  """GFLOP/s of the step's own matmul shapes, as a share of the peak."""
  cases = {
      f"projection [{tokens},{width}]x[{width},{width}]": ((tokens, width), (width, width)),
      f"mlp [{tokens},{width}]x[{width},{mlp}]": ((tokens, width), (width, mlp)),
      f"mlp out [{tokens},{mlp}]x[{mlp},{width}]": ((tokens, mlp), (mlp, width)),
  }
  lines = []
  for name, (a_shape, b_shape) in cases.items():
    a = jnp.ones(a_shape, jnp.float32)
    b = jnp.ones(b_shape, jnp.float32)
    f = jax.jit(jnp.dot)
    s = C.median_seconds(lambda: f(a, b).block_until_ready(), 5)
    rate = 2.0 * a_shape[0] * a_shape[1] * b_shape[1] / s
    lines.append(f"  {name:<44} {rate / 1e9:7.1f} GFLOP/s ({rate / peak:.0%} of peak)")
  batch = tokens // length
  q = jnp.ones((batch, length, heads, head_dim), jnp.float32)
  att = jax.jit(lambda q: jax.nn.dot_product_attention(q, q, q, is_causal=True))
  s = C.median_seconds(lambda: att(q).block_until_ready(), 5)
  rate = 4.0 * batch * heads * length * length * head_dim / s
  lines.append(f"  {'attention (XLA, causal, counted full)':<44} {rate / 1e9:7.1f} GFLOP/s "
               f"({rate / peak:.0%} of peak)")
  return lines


def profile(step: C.TrainStep, step_seconds: float, peak: float) -> list[str]:
  """Forward / forward+backward / update times and the per-shape matmul rates."""
  params, _ = step.state()
  batch, rng = step.batch, step.rng
  loss = jax.jit(lambda p: step.family.loss(p, batch, rng, train=True)[0])
  grad = jax.jit(jax.value_and_grad(lambda p: step.family.loss(p, batch, rng, train=True)[0]))
  fwd_s = C.median_seconds(lambda: loss(params).block_until_ready(), 3)
  bwd_s = C.median_seconds(lambda: jax.block_until_ready(grad(params)), 3)
  fwd_flops = C.flops.count_flops(lambda p: step.family.loss(p, batch, rng, train=True)[0],
                                  params)
  grad_flops = C.flops.count_flops(jax.value_and_grad(
      lambda p: step.family.loss(p, batch, rng, train=True)[0]), params)
  # The decoder's shapes wherever its config lives (model or model.lm: family.lm_config);
  # two-tower models (CLIP) have no decoder, so they get the times without per-shape rates.
  m = getattr(step.family, "lm_config", None)
  lines = ["profile (where the time goes):",
           f"  forward              {fwd_s * 1e3:8.1f} ms  {fwd_flops / fwd_s / 1e9:7.1f} GFLOP/s",
           f"  forward + backward   {bwd_s * 1e3:8.1f} ms  {grad_flops / bwd_s / 1e9:7.1f} GFLOP/s",
           f"  optimizer + rest     {(step_seconds - bwd_s) * 1e3:8.1f} ms  (no matmuls)",
           f"  whole step           {step_seconds * 1e3:8.1f} ms"]
  if m is None:
    return lines
  lines.append("matmul rate at the model's shapes:")
  lines += shape_rates(m.width, m.mlp_dim or 4 * m.width,
                       step.batch_size * step.config.data.text_length, m.num_heads,
                       step.config.data.text_length, m.dims_per_head, peak)
  return lines


def main(argv=None) -> float:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--spec", default="configs/lm.py:tiny", help="config (medium overrides "
                      "are applied to configs/lm.py presets)")
  parser.add_argument("overrides", nargs="*", help="extra config overrides, e.g. model.scan=False")
  parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
  parser.add_argument("--rounds", type=int, default=3, help="alternating peak/step rounds")
  args = parser.parse_args(argv)
  overrides = (C.MEDIUM_LM if args.spec.startswith("configs/lm.py") else ()) + \
      tuple(args.overrides)
  step = C.TrainStep(args.spec, overrides)
  flops = step.model_flops()
  step.run(1)  # compile + warm up
  peaks, step_times = [], []
  for _ in range(args.rounds):
    peaks.append(C.matmul_peak())
    step_times.append(C.median_seconds(lambda: step.run(1), args.steps, warmup=0))
  peak, seconds = max(peaks), C.statistics.median(step_times)
  mfu = flops / seconds / peak
  print(f"backend {jax.default_backend()}, {jax.device_count()} device(s), "
        f"XLA_FLAGS={C.os.environ.get('XLA_FLAGS', '')}")
  print(f"matmul peak (2048^3 fp32 jnp.dot, best of {args.rounds} medians): "
        f"{peak / 1e9:.1f} GFLOP/s; per round {[round(p / 1e9, 1) for p in peaks]}")
  print(f"train step {args.spec} {' '.join(o for o in overrides)}: batch {step.batch_size}, "
        f"{flops / 1e9:.2f} model GFLOP/step (jaxpr count), {seconds * 1e3:.1f} ms/step "
        f"(median), {flops / seconds / 1e9:.1f} GFLOP/s")
  if mfu < TARGET:
    print("\n".join(profile(step, seconds, peak)))
  print(C.verdict("MFU", mfu, f">= {TARGET:.0%}", mfu >= TARGET))
  return mfu


if __name__ == "__main__":
  main()
