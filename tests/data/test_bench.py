"""The bench CLI runs standalone and from a config file with a `data` field."""

import textwrap

from mmjax.data import bench


def test_bench_flags_and_config_file(tmp_path, data_dir, capsys):
  flags = ["--num_train", "64", "--image_size", "32", "--data_dir", data_dir, "--steps", "2",
           "--warmup", "1", "--batch_size", "8"]
  assert bench.main(["--task", "caption"] + flags) > 0
  cfg = tmp_path / "cfg.py"
  cfg.write_text(textwrap.dedent("""
      import ml_collections
      from mmjax.data.config import default_data_config
      def get_config(arg):
        c = ml_collections.ConfigDict()
        c.data = default_data_config(task="interleaved", datasets=("shapes_interleaved",),
                                     num_frames=4)
        return c
      """))
  assert bench.main(["--config", f"{cfg}:tiny"] + flags) > 0
  assert "examples/s" in capsys.readouterr().out


def test_bench_reads_the_real_family_configs():
  # The family configs import configs/common.py: the bench must load them as the trainer does.
  data = bench.load_config_file("configs/flamingo.py:tiny")
  assert data.task == "caption" and data.as_media and data.image_size == 64
