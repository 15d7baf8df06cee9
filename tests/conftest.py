"""Test setup: 8 virtual CPU devices, set before JAX initialises its backend."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  pylint: disable=wrong-import-position

jax.config.update("jax_platforms", "cpu")
# Parity tests compare fp32 numbers to 1e-5; XLA's default CPU matmul precision is already fp32.
jax.config.update("jax_default_matmul_precision", "highest")
