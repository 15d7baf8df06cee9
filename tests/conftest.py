"""Test setup: 8 virtual CPU devices, set before JAX initialises its backend."""

import os

# Compilation, not execution, dominates this suite of micro models: XLA's backend optimisations
# cost ~35% of each compile and buy nothing at these sizes (semantics are the same at every
# level). MMJAX_TEST_XLA_OPT=3 restores XLA's default for a run that wants optimised code.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8" +
                           " --xla_backend_optimization_level=" +
                           os.environ.get("MMJAX_TEST_XLA_OPT", "0")).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402  pylint: disable=wrong-import-position

jax.config.update("jax_platforms", "cpu")
# Many tests compile the same small programs (e.g. a run and its resumption): cache them.
_CACHE = os.environ.get("MMJAX_TEST_COMPILE_CACHE", "/tmp/mmjax_test_compile_cache")
jax.config.update("jax_compilation_cache_dir", _CACHE)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
# Trainers that tests start as subprocesses (multi-host, resumption) share the same cache.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", _CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
# Parity tests compare fp32 numbers to 1e-5; XLA's default CPU matmul precision is already fp32.
jax.config.update("jax_default_matmul_precision", "highest")

import pathlib  # noqa: E402

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _run_from_repo_root():
  """Config specs such as 'configs/clip.py:tiny' are relative to the repository root."""
  previous = os.getcwd()
  os.chdir(REPO_ROOT)
  yield
  os.chdir(previous)


# Files whose tests (or module fixtures) each take a minute or more on 2 cores, longest first.
# `-n 2 --dist loadscope` hands whole modules to the two workers in collection order; starting
# with these keeps one worker from still running a two-minute test while the other idles.
# Only the order changes: every test still runs.
HEAVY_FIRST = (
    "experiments/test_recipe_smoke.py", "experiments/test_connectors_smoke.py",
    "test_multiprocess.py", "evaluators/test_end_to_end.py", "experiments/test_modalities_coattn.py",
    "experiments/test_modalities_vq.py", "test_chaos.py", "experiments/test_modalities_audio.py",
    "test_instruct_train.py", "experiments/test_hires_smoke.py", "convert/test_gguf.py",
    "test_write_sandbox.py", "test_train.py", "test_train_options.py",
)


def pytest_collection_modifyitems(items):
  """Moves HEAVY_FIRST's tests to the front (stable: each file keeps its own order)."""
  def rank(item):
    path = pathlib.Path(str(item.fspath)).relative_to(REPO_ROOT / "tests").as_posix()
    return HEAVY_FIRST.index(path) if path in HEAVY_FIRST else len(HEAVY_FIRST)
  items.sort(key=rank)
